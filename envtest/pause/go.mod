module hyft.local/tools/pause

go 1.26
