"""ctypes declarations of the part of llama.cpp's C API that the llama.cpp runtime uses.

Every struct mirrors `include/llama.h` of the llama.cpp release that the pinned npm package
`@node-llama-cpp/linux-x64` was built from (its `_nlcBuildMetadata.json` names the release; the matching
source ships as `llama/gitRelease.bundle` in the `node-llama-cpp` npm package of the same version).
llama.h changes its structs between releases without renaming them, so a new pin must re-check every
field here: a struct returned by value that is declared too short silently corrupts the caller's stack.
`load` checks the documented defaults of the returned structs as a cheap guard against that.

Only the runtime's measuring child and its quantizing child load this (see `llamacpp_child`), so a crash in the
C library never takes down the orchestrator.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_bool, c_char_p, c_float, c_int, c_int8, c_int32, c_int64, c_size_t, c_uint32, c_void_p
from pathlib import Path

# enum llama_ftype (llama.h): the target types of llama_model_quantize
FTYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
    "IQ4_NL": 25, "IQ4_XS": 30, "BF16": 32,
}
LOG_WARN = 3  # enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
LOG_CONT = 5
FLASH_ATTN_AUTO = -1
LOAD_MODE_MMAP = 1  # enum llama_load_mode: mmap without mlock (AUTO may pick direct I/O on some systems)


class ModelParams(ctypes.Structure):
    """struct llama_model_params."""

    _fields_ = [
        ("devices", c_void_p),                  # ggml_backend_dev_t *
        ("tensor_buft_overrides", c_void_p),
        ("n_gpu_layers", c_int32),
        ("split_mode", c_int),                  # enum llama_split_mode
        ("load_mode", c_int),                   # enum llama_load_mode
        ("lazy_mode", c_int),                   # enum llama_lazy_mode
        ("main_gpu", c_int32),
        ("tensor_split", c_void_p),             # const float *
        ("progress_callback", c_void_p),
        ("progress_callback_user_data", c_void_p),
        ("kv_overrides", c_void_p),
        ("vocab_only", c_bool),
        ("check_tensors", c_bool),
        ("use_extra_bufts", c_bool),
        ("no_host", c_bool),
        ("no_alloc", c_bool),
        ("load_mtp", c_bool),
    ]


class ContextParams(ctypes.Structure):
    """struct llama_context_params."""

    _fields_ = [
        ("n_ctx", c_uint32),
        ("n_batch", c_uint32),
        ("n_ubatch", c_uint32),
        ("n_seq_max", c_uint32),
        ("n_rs_seq", c_uint32),
        ("n_outputs_max", c_uint32),
        ("n_outputs_max_per_seq", c_uint32),
        ("n_threads", c_int32),
        ("n_threads_batch", c_int32),
        ("ctx_type", c_int),
        ("rope_scaling_type", c_int),
        ("pooling_type", c_int),
        ("attention_type", c_int),
        ("flash_attn_type", c_int),
        ("rope_freq_base", c_float),
        ("rope_freq_scale", c_float),
        ("yarn_ext_factor", c_float),
        ("yarn_attn_factor", c_float),
        ("yarn_beta_fast", c_float),
        ("yarn_beta_slow", c_float),
        ("yarn_orig_ctx", c_uint32),
        ("defrag_thold", c_float),
        ("cb_eval", c_void_p),
        ("cb_eval_user_data", c_void_p),
        ("type_k", c_int),                      # enum ggml_type
        ("type_v", c_int),
        ("abort_callback", c_void_p),
        ("abort_callback_data", c_void_p),
        ("embeddings", c_bool),
        ("offload_kqv", c_bool),
        ("no_perf", c_bool),
        ("op_offload", c_bool),
        ("swa_full", c_bool),
        ("kv_unified", c_bool),
        ("samplers", c_void_p),                 # struct llama_sampler_seq_config *
        ("n_samplers", c_size_t),
        ("ctx_other", c_void_p),
    ]


class QuantizeParams(ctypes.Structure):
    """struct llama_model_quantize_params."""

    _fields_ = [
        ("nthread", c_int32),
        ("ftype", c_int),                       # enum llama_ftype
        ("output_tensor_type", c_int),          # enum ggml_type
        ("token_embedding_type", c_int),
        ("allow_requantize", c_bool),
        ("quantize_output_tensor", c_bool),
        ("only_copy", c_bool),
        ("pure", c_bool),
        ("keep_split", c_bool),
        ("dry_run", c_bool),
        ("imatrix", c_void_p),
        ("kv_overrides", c_void_p),
        ("tt_overrides", c_void_p),
        ("prune_layers", c_void_p),
        ("max_buf_size", c_size_t),
    ]


class Batch(ctypes.Structure):
    """struct llama_batch (allocated by llama_batch_init, which fills nothing: every used entry is set here)."""

    _fields_ = [
        ("n_tokens", c_int32),
        ("token", POINTER(c_int32)),
        ("embd", POINTER(c_float)),
        ("pos", POINTER(c_int32)),
        ("n_seq_id", POINTER(c_int32)),
        ("seq_id", POINTER(POINTER(c_int32))),
        ("logits", POINTER(c_int8)),
    ]


LogCallback = ctypes.CFUNCTYPE(None, c_int, c_char_p, c_void_p)

_SIGNATURES = {  # name: (restype, argtypes)
    "llama_version": (c_char_p, []),
    "ggml_version": (c_char_p, []),
    "ggml_commit": (c_char_p, []),
    "llama_print_system_info": (c_char_p, []),
    "llama_log_set": (None, [LogCallback, c_void_p]),
    "ggml_backend_load_all_from_path": (None, [c_char_p]),
    "ggml_backend_dev_count": (c_size_t, []),
    "llama_backend_init": (None, []),
    "llama_model_default_params": (ModelParams, []),
    "llama_context_default_params": (ContextParams, []),
    "llama_model_quantize_default_params": (QuantizeParams, []),
    "llama_model_quantize": (c_uint32, [c_char_p, c_char_p, POINTER(QuantizeParams)]),
    "llama_model_load_from_file": (c_void_p, [c_char_p, ModelParams]),
    "llama_model_free": (None, [c_void_p]),
    "llama_init_from_model": (c_void_p, [c_void_p, ContextParams]),
    "llama_free": (None, [c_void_p]),
    "llama_model_get_vocab": (c_void_p, [c_void_p]),
    "llama_vocab_n_tokens": (c_int32, [c_void_p]),
    "llama_vocab_bos": (c_int32, [c_void_p]),
    "llama_vocab_get_add_bos": (c_bool, [c_void_p]),
    "llama_tokenize": (c_int32, [c_void_p, c_char_p, c_int32, POINTER(c_int32), c_int32, c_bool, c_bool]),
    "llama_n_ctx": (c_uint32, [c_void_p]),
    "llama_get_memory": (c_void_p, [c_void_p]),
    "llama_memory_clear": (None, [c_void_p, c_bool]),
    "llama_memory_seq_rm": (c_bool, [c_void_p, c_int32, c_int32, c_int32]),  # (memory, seq, p0, p1 < 0: to the end)
    "llama_state_seq_get_size": (c_size_t, [c_void_p, c_int32]),
    "llama_batch_init": (Batch, [c_int32, c_int32, c_int32]),
    "llama_batch_free": (None, [Batch]),
    "llama_decode": (c_int32, [c_void_p, Batch]),
    "llama_synchronize": (None, [c_void_p]),
    "llama_get_logits": (POINTER(c_float), [c_void_p]),
    "llama_get_logits_ith": (POINTER(c_float), [c_void_p, c_int32]),
    # ggml's own row quantizer (libggml-base), the one llama_model_quantize calls per tensor: type, float rows,
    # destination, first element, rows, elements per row, importance per column (NULL: none) -> bytes written
    "ggml_quantize_chunk": (c_size_t, [c_int, c_void_p, c_void_p, c_int64, c_int64, c_int64, c_void_p]),
}


def _check_defaults(lib: ctypes.CDLL) -> None:
    """Compare the by-value default structs with the values llama.cpp documents for this release: a field
    missing or added in these declarations shifts the ones after it, which this notices."""
    m, c, q = lib.llama_model_default_params(), lib.llama_context_default_params(), \
        lib.llama_model_quantize_default_params()
    got = ((m.n_gpu_layers, m.load_mode, m.lazy_mode, m.use_extra_bufts, m.load_mtp),
           (c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max, c.n_outputs_max_per_seq, c.flash_attn_type,
            c.yarn_ext_factor, c.defrag_thold, c.type_k, c.type_v, c.offload_kqv, c.swa_full, c.kv_unified,
            c.n_samplers),
           (q.ftype, q.allow_requantize, q.quantize_output_tensor, q.dry_run, q.max_buf_size > 0))
    want = ((-1, -1, 1, True, False),
            (512, 2048, 512, 1, 1, -1, -1.0, -1.0, 1, 1, True, True, False, 0),
            (7, False, True, False, True))
    if got != want:
        raise RuntimeError(f"llama.cpp's default params do not match the declared structs (a different llama.h?): "
                           f"got {got}, expected {want}")


def load(path: Path) -> ctypes.CDLL:
    """Load libllama at `path` (its ggml libraries beside it), declare the functions used and check the structs."""
    lib = ctypes.CDLL(str(path))  # ggml's symbols resolve through this handle: libllama links libggml
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    _check_defaults(lib)
    return lib
