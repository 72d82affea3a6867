"""Compiled acting kernel for the retrieval read (numba, optional: the `retrieval` extra).

The two-stage top-k read and the slot attention are many tiny per-row operations; in numpy each
is a separate op over a whole [rows, ...] array (argpartition alone cost ~80 us for 32 x 131 on
this machine) and, right after the torch encoder has run, each op also pays cache misses. In
compiled loops they are a few microseconds per row. Transcendentals stay in numpy, whose SIMD
exp/tanh beat numba's scalar libm calls (a compiled slot-GRU was 4x slower than numpy's).
Without numba `NumpyRetrievalStep` keeps its numpy path, which computes the same thing.
"""
from __future__ import annotations

import os

import numpy as np

try:
    import numba
except ImportError:  # the numpy path of NumpyRetrievalStep serves
    numba = None

ENABLED = numba is not None and os.environ.get("RLFLEET_NUMBA", "1") != "0"


def _slot_attention(p, zt, mhat, sa, k, d, m_out, u_out):  # pragma: no cover (compiled)
    """m_pre = mhat + z; one softmax over the slots per row i of the slot self-attention (logits
    (p_A,i + (zA)_i) . m_pre_j) and one for gamma (logits z_j . (s W_gamma)); m = m_pre + attention
    over (p_V + zW_v) (the caller applies the memory's tanh); u = sum_j gamma_j (z_j W'_v). Column
    blocks as in NumpyRetrievalStep."""
    b, ms = sa.shape[0], mhat.shape[1]
    e_size = u_out.shape[1]
    m_pre = np.empty((k, ms), np.float32)
    att = np.empty((k + 1, k), np.float32)
    for bi in range(b):
        for j in range(k):
            for i in range(ms):
                m_pre[j, i] = mhat[bi * k + j, i] + zt[bi * k + j, i]
        for i in range(k + 1):
            mx = np.float32(-np.inf)
            for j in range(k):
                acc = np.float32(0.0)
                if i < k:
                    for c in range(ms):
                        acc += (p[bi * k + i, d + c] + zt[bi * k + i, ms + c]) * m_pre[j, c]
                else:
                    for c in range(ms):
                        acc += zt[bi * k + j, c] * sa[bi, 3 * ms + c]
                att[i, j] = acc
                mx = max(mx, acc)
            tot = np.float32(0.0)
            for j in range(k):
                att[i, j] = np.exp(att[i, j] - mx)
                tot += att[i, j]
            for j in range(k):
                att[i, j] /= tot
        for i in range(k):
            for c in range(ms):
                acc = m_pre[i, c]
                for j in range(k):
                    acc += att[i, j] * (p[bi * k + j, d + ms + c] + zt[bi * k + j, 2 * ms + c])
                m_out[bi, i * ms + c] = acc
        for c in range(e_size):
            acc = np.float32(0.0)
            for j in range(k):
                acc += att[k, j] * zt[bi * k + j, 3 * ms + c]
            u_out[bi, c] = acc


def _top_k_read(e, starts, k1, k2, table, out):  # pragma: no cover (compiled)
    """Per row r of e = exp(attention logits): keep the k1 trajectories with the largest summed e
    (trajectory i owns steps starts[i]:starts[i + 1]; all of them when k1 >= their number), then
    the k2 steps with the largest e among theirs; out[r] = sum_j e_j table_j / sum_j e_j over
    those steps (their softmax weights)."""
    rows = e.shape[0]
    n, c = len(starts) - 1, table.shape[1]
    mass = np.empty(n, np.float32)
    keep = np.empty(n, np.bool_)
    top_e = np.empty(k2, np.float32)  # the k2 best so far, descending (insertion)
    top_j = np.empty(k2, np.int64)
    for r in range(rows):
        for i in range(n):
            acc = np.float32(0.0)
            for j in range(starts[i], starts[i + 1]):
                acc += e[r, j]
            mass[i] = acc
            keep[i] = k1 >= n
        if k1 < n:
            for _ in range(k1):
                best, bv = 0, np.float32(-1.0)
                for i in range(n):
                    if not keep[i] and mass[i] > bv:
                        best, bv = i, mass[i]
                keep[best] = True
        size = 0
        for i in range(n):
            if not keep[i]:
                continue
            for j in range(starts[i], starts[i + 1]):
                x = e[r, j]
                if size == k2 and x <= top_e[size - 1]:
                    continue
                pos = size if size < k2 else k2 - 1
                while pos > 0 and top_e[pos - 1] < x:
                    top_e[pos], top_j[pos] = top_e[pos - 1], top_j[pos - 1]
                    pos -= 1
                top_e[pos], top_j[pos] = x, j
                if size < k2:
                    size += 1
        total = np.float32(0.0)
        for q in range(size):
            total += top_e[q]
        for i in range(c):
            out[r, i] = 0.0
        for q in range(size):
            w, row = top_e[q] / total, top_j[q]
            for i in range(c):
                out[r, i] += w * table[row, i]


_jit = numba.njit(cache=True, nogil=True) if ENABLED else (lambda f: None)
slot_attention, top_k_read = _jit(_slot_attention), _jit(_top_k_read)
