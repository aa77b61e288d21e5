// Neighborhood attention (2D, dilated, NATTEN's semantics) on the CPU: forward and backward.
//
// Built on first use by dinat_backbone/ops/cpp_backend.py (torch.utils.cpp_extension.load).
// Semantics are those of dinat_backbone/ops/windows.py: per axis of length L, odd kernel k and
// dilation d, a query at index i is in residue class r = i mod d at group index j = i div d; the
// class is a sub-grid of length G = ceil((L - r) / d); the window starts at
// s = clamp(j - k/2, 0, G - k) (shifted inward at the borders) and its keys are r + d*(s + t),
// t < k; the RPB index of key t is (s + t) - j + (k - 1).
//
// Work is split into tasks, one per (batch, head, row residue, column residue): each task is
// plain (dilation 1) neighborhood attention on one sub-grid. A task's query rows are further
// split into chunks (num_chunks: by the shape only, never by the thread count) and the
// (task, chunk) items run in parallel (at::parallel_for, torch's threads). A chunk owns dq of its
// rows and dk / dv of the key rows only its queries reach; the key rows two neighbouring chunks
// both reach are gathered by each into a part of its own and summed after all chunks ran
// (sum_boundary): no atomics, and the same result with any number of threads.
//
// Inside a task, q/k/v are copied into a "transposed" layout [row][channel][column] with zero
// padding left and right (all of a chunk's rows first; on sub-grids of >= 128 columns, whose
// copies would not fit the core's L2, row by row into rings as the windows reach them: see
// forward_task and backward_task), and NL (8, or 16 with AVX-512; see below) consecutive queries of a row
// are one vector (lanes over queries). For a query x, the key at column x + e - (kw - 1) has extended index e in
// [0, 2kw - 2] -- which is also its RPB column -- and the window is e in [es(x), es(x) + kw) with
// es(x) = s(x) - x + kw - 1. For one vector of queries, the key column of index e is a
// contiguous (unaligned) vector load, so q.k, p.v and their gradients are vector FMAs with the
// channel loop inside (the compiler keeps the accumulators in registers); lanes whose window
// does not contain e are masked out (borders). Rows need no masks: all queries of a row share
// their window rows.
//
// Backward, per task: pass 1 walks query rows (recomputing the softmax, no saved weights),
// giving dS = P * (dP - sum P*dP) and dq, and keeps P and dS of the last rows in a ring buffer in
// the same extended layout; pass 2 walks key rows and gathers dk and dv from the queries whose
// windows contain each key (key-centric: no scatter-adds).
//
// Register blocking across rows: two neighbouring query rows share kh - 1 (or kh) of their
// window rows, so q.k, p.v, dout.v and dS.k take query rows in pairs (each key / value vector
// loaded, and lane-shifted, once for two rows' FMAs), and pass 2 takes key rows in pairs (each
// q / dout vector loaded once for two key rows). Every sum keeps its order (over channels, or
// window rows then entries, or query rows then entries), so a pair gives the bits of two single
// rows.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

// The kernel body, once per vector width (na2d_cpu_kernel.h): 8 queries per vector (256-bit
// registers for float), and, where the compiler targets AVX-512 (-march=native on such a CPU),
// also 16 (512-bit registers). Each call takes the wide kernel when its sub-grids are at least
// wide_min() columns wide (on a narrow sub-grid a 16-lane block is mostly masked lanes; on the
// 800x1216 maps the wide kernel makes a DiNAT-T step 2-3% faster, docs/benchmarks.md).
// NA_LANES=8 or 16 (cpp_backend.py's DINAT_NA_LANES) builds that width alone.
#if defined(NA_LANES)  // one width alone (a value, not the macro: NA_LANES is redefined below)
#if NA_LANES == 16
#define NA_ONLY 16
#else
#define NA_ONLY 8
#endif
#undef NA_LANES
#endif

#if !defined(NA_ONLY) || NA_ONLY == 8
namespace na_l8 {
#define NA_LANES 8
#include "na2d_cpu_kernel.h"
#undef NA_LANES
}  // namespace na_l8
#endif

#if (!defined(NA_ONLY) && defined(__AVX512F__)) || (defined(NA_ONLY) && NA_ONLY == 16)
#define NA_HAVE_WIDE 1
namespace na_l16 {
#define NA_LANES 16
#include "na2d_cpu_kernel.h"
#undef NA_LANES
}  // namespace na_l16
#endif

namespace {

#if defined(NA_ONLY) && NA_ONLY == 16
namespace narrow = na_l16;
#else
namespace narrow = na_l8;
#endif

// Narrowest sub-grid (columns per dilation residue class) that takes the 16-lane kernel
// (DINAT_NA_WIDE_MIN, or set_wide_min, for experiments and tests).
std::atomic<int> g_wide_min{[] {
  const char* e = std::getenv("DINAT_NA_WIDE_MIN");
  return e ? std::max(1, std::atoi(e)) : 48;
}()};

int wide_min() { return g_wide_min.load(std::memory_order_relaxed); }

// Sets the threshold; returns the previous one.
int64_t set_wide_min(int64_t v) { return g_wide_min.exchange((int)std::max<int64_t>(1, v)); }

bool wide(const at::Tensor& q, int64_t dw) {
#ifdef NA_HAVE_WIDE
  return q.dim() == 5 && q.size(3) / std::max<int64_t>(dw, 1) >= wide_min();
#else
  (void)q;
  (void)dw;
  return false;
#endif
}

#ifdef NA_HAVE_WIDE
#define NA_CALL(fn, q, dw, ...) (wide(q, dw) ? na_l16::fn(__VA_ARGS__) : narrow::fn(__VA_ARGS__))
#else
#define NA_CALL(fn, q, dw, ...) narrow::fn(__VA_ARGS__)
#endif

std::vector<at::Tensor> na2d_forward(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const c10::optional<at::Tensor>& rpb,
                                     int64_t kh, int64_t kw, int64_t dh, int64_t dw, double scale,
                                     bool return_attn) {
  return NA_CALL(na2d_forward, q, dw, q, k, v, rpb, kh, kw, dh, dw, scale, return_attn);
}

at::Tensor na2d_backward_out(at::Tensor dq, at::Tensor dk, at::Tensor dv, const at::Tensor& dout,
                             const c10::optional<at::Tensor>& gattn, const at::Tensor& q,
                             const at::Tensor& k, const at::Tensor& v,
                             const c10::optional<at::Tensor>& rpb, int64_t kh, int64_t kw,
                             int64_t dh, int64_t dw, double scale, bool rpb_grad) {
  return NA_CALL(na2d_backward_out, q, dw, dq, dk, dv, dout, gattn, q, k, v, rpb, kh, kw, dh, dw,
                 scale, rpb_grad);
}

std::vector<at::Tensor> na2d_backward(const at::Tensor& dout, const c10::optional<at::Tensor>& gattn,
                                      const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const c10::optional<at::Tensor>& rpb,
                                      int64_t kh, int64_t kw, int64_t dh, int64_t dw,
                                      double scale, bool rpb_grad) {
  return NA_CALL(na2d_backward, q, dw, dout, gattn, q, k, v, rpb, kh, kw, dh, dw, scale,
                 rpb_grad);
}

// Vector width the call for q (B, heads, H, W, D) at column dilation dw takes.
int64_t lanes_for(const at::Tensor& q, int64_t dw) { return wide(q, dw) ? 16 : narrow::NL; }

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &na2d_forward, "neighborhood attention forward (CPU)");
  m.def("backward", &na2d_backward, "neighborhood attention backward (CPU)");
  m.def("backward_out", &na2d_backward_out,
        "neighborhood attention backward (CPU) into given dq, dk, dv; returns the RPB grad");
  m.def("num_chunks", &narrow::num_chunks, "row chunks per task for (H, kh, dh)");
  m.def("set_wide_min", &set_wide_min, "set the narrowest sub-grid taking 16 lanes; returns the old");
  m.def("lanes_for", &lanes_for, "queries per vector the kernel takes for q at column dilation dw");
}
