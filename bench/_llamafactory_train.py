"""Run inside the LLaMA-Factory venv under torchrun: LLaMA-Factory's own SFT training (run_exp) on
a YAML, with a timer on global rank 0 that records what hyft's report.json "timeline" records: at
each logged step, the seconds since training began and the non-padding tokens seen by then.
argv: config.yaml timeline.json"""
import json
import resource
import sys
import time

import yaml
from llamafactory.train.tuner import run_exp
from transformers import Trainer, TrainerCallback

_track = Trainer._track_num_input_tokens


def _track_real_tokens(self, inputs):
    """neat_packing's attention mask is a 4D float block mask, whose sum is no token count: count
    the ids that are not padding instead, as transformers does for hyft's packed rows (no mask)."""
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 4:
        inputs = {k: v for k, v in inputs.items() if k != "attention_mask"}
    return _track(self, inputs)


Trainer._track_num_input_tokens = _track_real_tokens


class Timeline(TrainerCallback):
    def __init__(self, path):
        self.path, self.points, self.began = path, [], None

    def on_train_begin(self, args, state, control, **kwargs):
        self.began = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.began is not None and "loss" in (logs or {}):
            self.points.append({"step": state.global_step, "seconds": time.perf_counter() - self.began,
                                "tokens": state.num_input_tokens_seen})

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            with open(self.path, "w") as f:
                json.dump({"timeline": self.points,
                           "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}, f)


config_path, timeline_path = sys.argv[1:3]
run_exp(yaml.safe_load(open(config_path)), callbacks=[Timeline(timeline_path)])
