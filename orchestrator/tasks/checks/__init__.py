"""Checks of what a task will read, run in preflight before any node computes (see `Task.check`).

Each opens files the way a loader would, but only their headers, tables of contents and a bounded amount of
text: no weights are loaded, nothing is trained, and neither torch nor transformers is imported (a cached
rerun stays free of torch). Every problem is one ConfigError naming the task key it belongs to.

- `paths`: a local path that exists, of the right kind (file or folder), readable, not empty, not a Git LFS
  pointer.
- `gguf`: a GGUF file's header: magic, version, metadata, tensor table, and that the file holds every tensor.
- `models`: a save_pretrained folder: config.json, an architecture the installed transformers knows, weights
  whose headers are whole, tokenizer files.
- `tables`: data files: supported suffix, decodable text, the named columns, rows and characters.
"""
