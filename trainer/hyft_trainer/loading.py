"""Find, read and validate training data with `datasets` (cached, parallel map).

Sources: JSON (a top-level list) and JSONL files, folders of them, and
LLaMA-Factory data folders (dataset_info.json: file_name, formatting, columns,
tags) so existing data folders work unchanged. Every record keeps where it came
from (file, sample index, JSONL line) for error messages.

Over 300 lines: every source kind (files, folders, LLaMA-Factory's dataset_info.json with its
column maps) ends in the same validated records; the reading rules belong together.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .chat_format import Message
from .samples import Columns, Conversation, SampleError, excerpt, to_conversation

DATA_SUFFIXES = (".jsonl", ".json")
RECORDS_VERSION = 3  # part of the cache key: bump when _all_records' output changes


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    path: Path
    format: str = "auto"
    columns: Columns = field(default_factory=Columns)
    name: str = ""
    dataset: str = ""  # the entry it came from (a folder's files share one): max_samples counts per dataset


def _columns(entry: dict) -> Columns:
    cols, tags = entry.get("columns") or {}, entry.get("tags") or {}
    known = {f for f in Columns.__dataclass_fields__}
    return Columns(**{k: v for k, v in {**cols, **tags}.items() if k in known})


def sources_from_dataset_info(folder: Path, names: list[str] | None = None) -> list[Source]:
    info_path = folder / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{info_path}: cannot read: {err}") from None
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: must map dataset names to entries")
    unknown = [n for n in names or [] if n not in info]
    if unknown:
        raise DataError(f"{info_path}: no dataset named {', '.join(unknown)} (has: {', '.join(info)})")
    sources = []
    for name in names or list(info):
        entry = info[name]
        if not isinstance(entry, dict) or "file_name" not in entry:
            raise DataError(f"{info_path}: {name}: needs a file_name (hub and script datasets are not supported)")
        fmt = entry.get("formatting", "alpaca")  # LLaMA-Factory's default
        if fmt not in ("alpaca", "sharegpt"):
            raise DataError(f"{info_path}: {name}: formatting {fmt!r} is not supported")
        sources.append(Source(folder / entry["file_name"], fmt, _columns(entry), name, f"{info_path}:{name}"))
    return sources


def sources_from_paths(paths: list[str | Path], fmt: str = "auto") -> list[Source]:
    sources = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and (path / "dataset_info.json").exists():
            sources += sources_from_dataset_info(path)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in DATA_SUFFIXES)
            if not files:
                raise DataError(f"{path}: no .json or .jsonl files")
            sources += [Source(p, fmt, name=p.name, dataset=str(path)) for p in files]
        elif path.exists():
            sources.append(Source(path, fmt, name=path.name, dataset=str(path)))
        else:
            raise DataError(f"{path}: no such file or folder")
    return sources


def sources_for_config(config) -> list[Source]:
    # Each entry's format applies to what that entry expands to (a folder: all its files);
    # a LLaMA-Factory folder's own dataset_info formats win over it.
    sources = []
    for data_file in config.data_files or []:
        sources += [Source(s.path, data_file.format, s.columns, s.name, s.dataset) if s.format == "auto" else s
                    for s in sources_from_paths([data_file.path])]
    if config.dataset:
        sources += sources_from_dataset_info(Path(config.dataset_dir), config.dataset)
    return sources


def raw_records(source: Source) -> Iterator[dict]:
    """Each record as JSON text, with its location; unreadable lines become error records."""
    base = {"file": str(source.path), "format": source.format}
    try:
        handle = open(source.path, "rb")
    except OSError as err:
        raise DataError(f"{source.path}: cannot read: {err}") from None
    with handle:
        if source.path.suffix == ".jsonl":
            index = 0
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:  # a BOM may open the file
                    text, error = line.decode("utf-8-sig" if line_no == 1 else "utf-8"), ""
                except UnicodeDecodeError as err:
                    text, error = "", f"not UTF-8 text: byte {err.start} is {line[err.start:err.start + 1]!r}"
                yield {**base, "index": index, "line": line_no, "raw": text, "load_error": error}
                index += 1
            if not index:
                yield {**base, "index": -1, "line": -1, "raw": "", "load_error": "empty file: no samples"}
            return
        try:
            data = json.loads(handle.read().decode("utf-8-sig"))
        except (ValueError, RecursionError) as err:
            message = ("nested too deeply" if isinstance(err, RecursionError)
                       else f"not UTF-8 text: byte {err.start} is {err.object[err.start:err.start + 1]!r}"
                       if isinstance(err, UnicodeDecodeError) else str(err))
            yield {**base, "index": -1, "line": getattr(err, "lineno", -1), "raw": "", "load_error": message}
            return
    if not isinstance(data, list) or not data:
        what = "an empty list" if isinstance(data, list) else type(data).__name__
        yield {**base, "index": -1, "line": -1, "raw": "",
               "load_error": f"a .json data file must hold a list of samples, got {what}"}
        return
    for index, record in enumerate(data):
        # ASCII escapes: a lone surrogate (valid JSON, not valid Unicode) must reach check_record as text
        yield {**base, "index": index, "line": -1, "raw": json.dumps(record)}


def _fingerprint(sources: list[Source]) -> str:
    """Changes whenever a file changes, so the datasets cache never serves stale data."""
    h = hashlib.sha256(f"records v{RECORDS_VERSION}".encode())
    for s in sources:
        st = os.stat(s.path)
        h.update(f"{s.path}|{st.st_size}|{st.st_mtime_ns}|{s.format}|{s.columns}".encode())
    return h.hexdigest()


def _all_records(sources: tuple[Source, ...], fingerprint: str, max_samples: int | None = None
                 ) -> Iterator[dict]:
    """Every source's records; with max_samples, the first N of each dataset (LLaMA-Factory's meaning)."""
    del fingerprint  # part of the generator's cache key only
    taken: dict[str, int] = {}
    row = 0
    for source in sources:
        for record in raw_records(source):
            if max_samples is not None:
                if taken.get(source.dataset, 0) >= max_samples:
                    break
                taken[source.dataset] = taken.get(source.dataset, 0) + 1
            yield {"load_error": "", **record, "row": row}
            row += 1


def records_at(sources: list[Source], rows: set[int], max_samples: int | None = None) -> dict[int, dict]:
    """The raw records with these row numbers (read again from the files, up to the last one wanted)."""
    found: dict[int, dict] = {}
    for record in _all_records(tuple(sources), "", max_samples):
        if record["row"] in rows:
            found[record["row"]] = record
            if len(found) == len(rows):
                break
    return found


def location(row: dict) -> str:
    where = row["file"]
    if row.get("line", -1) > 0:
        where += f" line {row['line']}"
    if row.get("index", -1) >= 0:
        where += f" (sample {row['index']})"
    return where


def parse_record(raw: str, load_error: str = ""):
    """The JSON value of one raw record (raw_records' raw and load_error); SampleError when it is not JSON."""
    if load_error:
        raise SampleError("invalid_json", load_error)
    try:
        return json.loads(raw)
    except ValueError as err:
        raise SampleError("invalid_json", f"invalid JSON: {err} (line starts {excerpt(raw[:40])})") from None
    except RecursionError:
        raise SampleError("invalid_json", "invalid JSON: nested too deeply") from None


MAX_ERROR_CHARS = 400


def conversation_at(row: dict, columns: dict[str, Columns], require_markup: bool,
                    default_system: str | None = None) -> Conversation | None:
    """A raw record's conversation, as the data pass read it (None for an invalid one)."""
    return _checked(row["raw"], row["load_error"], row["format"], columns.get(row["file"], NO_COLUMNS),
                    require_markup, default_system)[0]


NO_COLUMNS = Columns()
# what check_batch adds per row (with the messages, or the encoder's columns)
REPORT_COLUMNS = ("reason", "error", "fast", "slow", "plain", "turns", "system", "tools")


def _checked(raw: str, load_error: str, fmt: str, cols: Columns, require_markup: bool,
             default_system: str | None = None) -> tuple[Conversation | None, SampleError | None]:
    """One raw record -> (its conversation, None) or (None, what is wrong with it)."""
    try:
        conv = to_conversation(parse_record(raw, load_error), fmt, cols, require_markup, default_system)
    except SampleError as err:
        return None, err
    return conv, None


def _report(row: dict | None, conv: Conversation | None, problem: SampleError | None) -> tuple:
    """The row's REPORT_COLUMNS (row: its location, read only for a problem)."""
    if problem is not None:
        return problem.reason, f"{location(row)}: {problem.message}"[:MAX_ERROR_CHARS], 0, 0, 0, 0, False, False
    return ("", "", conv.fast_turns, conv.slow_turns, conv.plain_turns, len(conv.messages),
            conv.messages[0].role == "system", conv.tools is not None)


def _as_dicts(messages: list[Message] | None) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages or []]


def load_checked(sources: list[Source], require_markup: bool = False, num_proc: int | None = None,
                 max_samples: int | None = None, encoder=None, features=None, default_system: str | None = None):
    """A datasets.Dataset with one row per sample: messages, or reason + error for a bad one. With an
    encoder (conversations -> columns), its columns replace messages, in the same pass."""
    from datasets import Dataset

    if not sources:
        raise DataError("no data sources")
    columns = {str(s.path): s.columns for s in sources}
    with cyclic_gc_paused():
        # a tuple: datasets splits list arguments into shards, one generator call each, which would restart
        # the row numbers and the max_samples counts at every file
        raw = Dataset.from_generator(_all_records, gen_kwargs={"sources": tuple(sources),
                                                               "fingerprint": _fingerprint(sources),
                                                               "max_samples": max_samples})
        return raw.map(check_batch, fn_kwargs={"columns": columns, "require_markup": require_markup,
                                               "encoder": encoder, "default_system": default_system},
                       batched=True, batch_size=1000, remove_columns=["raw", "load_error"], features=features,
                       num_proc=procs(num_proc, len(raw)),
                       desc="validating and tokenizing" if encoder else "validating")


@contextmanager
def cyclic_gc_paused():
    """Python's cycle collector off for the data pass (and in the map's forked workers). The pass makes
    millions of short-lived objects without cycles (parsed JSON, messages, id lists), which reference
    counting frees anyway; each collection they trigger would walk the whole heap of a trainer process
    (torch, transformers): a fifth of prepare()'s time here."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_batch(batch: dict[str, list], columns: dict[str, Columns], require_markup: bool,
                encoder=None, default_system: str | None = None) -> dict[str, list]:
    """check_record over a batch of rows (a batched map: no per-row formatting by datasets); with an
    encoder (each row's messages, None for an invalid row -> columns), its columns replace messages."""
    checked = [_checked(raw, load_error, fmt, columns.get(file, NO_COLUMNS), require_markup, default_system)
               for raw, load_error, fmt, file in zip(batch["raw"], batch["load_error"], batch["format"], batch["file"],
                                                     strict=True)]
    if not checked:
        return {}
    # a row's location is needed only for its error message
    reports = [_report(problem and {"file": file, "line": line, "index": index}, conv, problem)
               for (conv, problem), file, line, index in zip(checked, batch["file"], batch["line"], batch["index"],
                                                             strict=True)]
    out = dict(zip(REPORT_COLUMNS, map(list, zip(*reports, strict=True)), strict=True))
    messages = [conv.messages if conv else None for conv, _ in checked]
    # the encoder takes the Message objects as they are (no round trip through dicts)
    out.update(encoder(messages, [conv.tools if conv else None for conv, _ in checked]) if encoder is not None
               else {"messages": [_as_dicts(m) for m in messages]})
    return out


def procs(num_proc: int | None, rows: int) -> int | None:
    if num_proc is None:
        num_proc = min(os.cpu_count() or 1, 8)
    return num_proc if num_proc > 1 and rows >= 2000 else None  # process start-up costs more on small sets
