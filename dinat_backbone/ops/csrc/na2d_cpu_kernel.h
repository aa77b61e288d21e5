// The neighborhood-attention kernel (see na2d_cpu.cpp for what it computes and how), for
// NA_LANES queries per vector. Included by na2d_cpu.cpp once per vector width, each time inside
// a namespace of its own; no include guard on purpose.
namespace {

// Queries (or keys) per vector: NA_LANES, set by na2d_cpu.cpp before it includes this file.
constexpr int NL = NA_LANES;
static_assert(NL == 8 || NL == 16, "NA_LANES must be 8 or 16");
#undef NA_IOTA
#if NA_LANES == 16
#define NA_IOTA 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
#else
#define NA_IOTA 0, 1, 2, 3, 4, 5, 6, 7
#endif

typedef float vf __attribute__((vector_size(NL * sizeof(float))));
typedef double vd __attribute__((vector_size(NL * sizeof(double))));
typedef int32_t vi __attribute__((vector_size(NL * sizeof(int32_t))));

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = vf;
};
template <>
struct VecOf<double> {
  using type = vd;
};

template <typename V, typename T>
inline V loadu(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void storeu(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// Pins a loaded vector in a register: without it the compiler folds the load into each FMA
// that uses it (one load per use), which defeats loading a vector once for two rows.
template <typename V>
inline V in_reg(V x) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  if constexpr (sizeof(V) <= 64) asm("" : "+v"(x));  // wider than a register: two halves
#endif
  return x;
}

template <typename V, typename T>
inline V splat(T x) {
  return V{} + x;  // one vbroadcast
}

#ifndef NA_SHUFFLE
#ifdef __clang__
#define NA_SHUFFLE(M, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define NA_SHUFFLE(M, a, b, ...) __builtin_shuffle(a, b, M{__VA_ARGS__})
#endif
#endif

// Lanes idx[l] of the 16-lane concatenation (a, b); idx is constant after unrolling.
template <typename V, typename M>
inline V NA_SHUFFLE2(const V& a, const V& b, const M& idx) {
#ifdef __clang__
  V r;
  for (int l = 0; l < NL; ++l) r[l] = idx[l] < NL ? a[idx[l]] : b[idx[l] - NL];
  return r;
#else
  return __builtin_shuffle(a, b, idx);
#endif
}

// In-place transpose of 8 vectors of 8 lanes (NL = 8): r[j][l] <- r[l][j].
template <typename V>
inline void transpose8(V* r) {
  using M = decltype(r[0] < r[0]);  // the integer vector type of V's shuffle masks
  V t[8], u[8];
  for (int p = 0; p < 4; ++p) {
    t[2 * p] = NA_SHUFFLE(M, r[2 * p], r[2 * p + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * p + 1] = NA_SHUFFLE(M, r[2 * p], r[2 * p + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int p = 0; p < 2; ++p) {
    for (int h = 0; h < 2; ++h) {
      const V a = t[4 * p + h], b = t[4 * p + 2 + h];
      u[4 * p + 2 * h] = NA_SHUFFLE(M, a, b, 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * p + 2 * h + 1] = NA_SHUFFLE(M, a, b, 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  // u[0..3]: columns 0..3 (low half) and 4..7 (high half) of rows 0..3; u[4..7]: of rows 4..7
  for (int c = 0; c < 4; ++c) {
    r[c] = NA_SHUFFLE(M, u[c], u[4 + c], 0, 1, 2, 3, 8, 9, 10, 11);
    r[c + 4] = NA_SHUFFLE(M, u[c], u[4 + c], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// In-place transpose of NL vectors of NL lanes. NL = 8: transpose8. NL = 16: four rounds of
// the perfect shuffle (r'[2p] = lanes 0..7 of r[p] and r[p + 8] interleaved, r'[2p + 1] = lanes
// 8..15), which after log2(16) rounds is the transpose; 64 two-source permutes.
template <typename V>
inline void transpose_nl(V* r) {
#if NA_LANES == 16
  using M = decltype(r[0] < r[0]);
  for (int round = 0; round < 4; ++round) {
    V t[16];
    for (int p = 0; p < 8; ++p) {
      t[2 * p] = NA_SHUFFLE(M, r[p], r[p + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                            23);
      t[2 * p + 1] = NA_SHUFFLE(M, r[p], r[p + 8], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29,
                                14, 30, 15, 31);
    }
    for (int p = 0; p < 16; ++p) r[p] = t[p];
  }
#else
  transpose8(r);
#endif
}

// exp for float lanes (Cephes' expf: range reduction by ln 2, degree-6 polynomial; about 1 ulp).
// Arguments are clamped to [-87.3, 88]; callers multiply masked lanes by 0.
inline vf vexp(vf x) {
  const vf hi = splat<vf>(88.0f), lo = splat<vf>(-87.3365447505531f);
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const vf magic = splat<vf>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf fx = x * splat<vf>(1.44269504088896341f);
  fx = (fx + magic) - magic;
  x = x - fx * splat<vf>(0.693359375f);
  x = x - fx * splat<vf>(-2.12194440e-4f);
  vf y = splat<vf>(1.9875691500E-4f);
  y = y * x + splat<vf>(1.3981999507E-3f);
  y = y * x + splat<vf>(8.3334519073E-3f);
  y = y * x + splat<vf>(4.1665795894E-2f);
  y = y * x + splat<vf>(1.6666665459E-1f);
  y = y * x + splat<vf>(5.0000001201E-1f);
  y = y * (x * x) + x + splat<vf>(1.0f);
  vi n = __builtin_convertvector(fx, vi);
  vi bits = (n + 127) << 23;
  vf p2;
  std::memcpy(&p2, &bits, sizeof(vf));
  return y * p2;
}

inline vd vexp(vd x) {
  for (int l = 0; l < NL; ++l) x[l] = std::exp(std::min(x[l], 700.0));
  return x;
}

template <typename V, typename T>
inline T hsum(const V& v) {
  T s = 0;
  for (int l = 0; l < NL; ++l) s += v[l];
  return s;
}

// A vector of the lanes at p (BC = false) or p[0] in every lane (BC = true).
template <bool BC, typename V, typename T>
inline V ld(const T* p) {
  if (BC) return splat<V>(*p);
  return loadu<V>(p);
}

// out[j] = sum_d a[d*LP] * ld(b + d*LP + j) (vectors over lanes), j < EB: EB independent chains.
template <int EB, bool BC, typename T, typename V>
inline void dot_n(const T* a, const T* b, int D, int64_t LP, V* out) {
  V acc[EB];
  for (int j = 0; j < EB; ++j) acc[j] = V{};
  if (BC) {
    for (int d = 0; d < D; ++d) {
      const V av = loadu<V>(a + d * LP);
      const T* bp = b + d * LP;
      for (int j = 0; j < EB; ++j) acc[j] += av * ld<BC, V>(bp + j);
    }
  } else {
    // the EB shifted key vectors come from two loads and lane shifts (valign), not EB
    // unaligned loads that often straddle cache lines
    using M = decltype(acc[0] < acc[0]);
    for (int d = 0; d < D; ++d) {
      const V av = loadu<V>(a + d * LP);
      const T* bp = b + d * LP;
      const V lo = loadu<V>(bp), hi = loadu<V>(bp + NL);
      for (int j = 0; j < EB; ++j) {
        const M idx = M{NA_IOTA} + j;
        acc[j] += av * NA_SHUFFLE2(lo, hi, idx);
      }
    }
  }
  for (int j = 0; j < EB; ++j) out[j] = acc[j];
}

template <bool BC, typename T, typename V>
inline void dots(const T* a, const T* b, int D, int64_t LP, int n, V* out) {
  int e = 0;
  for (; n - e > 8; e += 8) dot_n<8, BC>(a, b + e, D, LP, out + e);
  switch (n - e) {
    case 8: dot_n<8, BC>(a, b + e, D, LP, out + e); break;
    case 7: dot_n<7, BC>(a, b + e, D, LP, out + e); break;
    case 6: dot_n<6, BC>(a, b + e, D, LP, out + e); break;
    case 5: dot_n<5, BC>(a, b + e, D, LP, out + e); break;
    case 4: dot_n<4, BC>(a, b + e, D, LP, out + e); break;
    case 3: dot_n<3, BC>(a, b + e, D, LP, out + e); break;
    case 2: dot_n<2, BC>(a, b + e, D, LP, out + e); break;
    case 1: dot_n<1, BC>(a, b + e, D, LP, out + e); break;
    default: break;
  }
}

// Two query rows of the same columns at once (register blocking across rows): out0[j] =
// a0 . key j and out1[j] = a1 . key j, each key vector (and its shifted lanes) loaded once for
// both. Every sum runs over d in the same order as dot_n's: the same bits.
template <int EB, bool BC, typename T, typename V>
inline void dot2_n(const T* a0, const T* a1, const T* b, int D, int64_t LP, V* out0, V* out1) {
  V acc0[EB], acc1[EB];
  for (int j = 0; j < EB; ++j) acc0[j] = acc1[j] = V{};
  if (BC) {
    for (int d = 0; d < D; ++d) {
      const V av0 = loadu<V>(a0 + d * LP), av1 = loadu<V>(a1 + d * LP);
      const T* bp = b + d * LP;
      for (int j = 0; j < EB; ++j) {
        const V kv = splat<V>(bp[j]);
        acc0[j] += av0 * kv;
        acc1[j] += av1 * kv;
      }
    }
  } else {
    using M = decltype(acc0[0] < acc0[0]);
    for (int d = 0; d < D; ++d) {
      const V av0 = loadu<V>(a0 + d * LP), av1 = loadu<V>(a1 + d * LP);
      const T* bp = b + d * LP;
      const V lo = loadu<V>(bp), hi = loadu<V>(bp + NL);
      for (int j = 0; j < EB; ++j) {
        const M idx = M{NA_IOTA} + j;
        const V kv = NA_SHUFFLE2(lo, hi, idx);
        acc0[j] += av0 * kv;
        acc1[j] += av1 * kv;
      }
    }
  }
  for (int j = 0; j < EB; ++j) {
    out0[j] = acc0[j];
    out1[j] = acc1[j];
  }
}

template <bool BC, typename T, typename V>
inline void dots2(const T* a0, const T* a1, const T* b, int D, int64_t LP, int n, V* out0,
                  V* out1) {
  int e = 0;
  for (; n - e > 8; e += 8) dot2_n<8, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e);
  switch (n - e) {
    case 8: dot2_n<8, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 7: dot2_n<7, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 6: dot2_n<6, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 5: dot2_n<5, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 4: dot2_n<4, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 3: dot2_n<3, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 2: dot2_n<2, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    case 1: dot2_n<1, BC>(a0, a1, b + e, D, LP, out0 + e, out1 + e); break;
    default: break;
  }
}

// acc[j] = sum_{i < rows, e < ne} P[i*ne + e] * ld(rowp[i] + off + e + j*LP), j < DB.
template <int DB, bool BC, typename T, typename V>
inline void wsum_n(const V* P, int rows, int ne, const T* const* rowp, int64_t off, int64_t LP,
                   V* out) {
  V acc[DB];
  for (int j = 0; j < DB; ++j) acc[j] = V{};
  for (int i = 0; i < rows; ++i) {
    const T* vb = rowp[i] + off;
    const V* Pi = P + i * ne;
    for (int e = 0; e < ne; ++e) {
      const V p = Pi[e];
      const T* vp = vb + e;
      for (int j = 0; j < DB; ++j) acc[j] += p * ld<BC, V>(vp + j * LP);
    }
  }
  for (int j = 0; j < DB; ++j) out[j] = acc[j];
}

// wsum_n for two query rows whose window rows start dsh (0 or 1) apart: key row r (from the
// first row's window start) is row r of P0 (r < kh) and row r - dsh of P1 (r >= dsh); each key
// vector is loaded once for both. Each sum keeps wsum_n's order (rows, then entries).
template <int DB, bool BC, typename T, typename V>
inline void wsum2_n(const V* P0, const V* P1, int kh, int dsh, int ne, const T* const* rowp,
                    int64_t off, int64_t LP, V* out0, V* out1) {
  V acc0[DB], acc1[DB];
  for (int j = 0; j < DB; ++j) acc0[j] = acc1[j] = V{};
  for (int r = 0; r < kh + dsh; ++r) {
    const T* vb = rowp[r] + off;
    if (r >= dsh && r < kh) {
      const V* p0 = P0 + r * ne;
      const V* p1 = P1 + (r - dsh) * ne;
      for (int e = 0; e < ne; ++e) {
        const V w0 = p0[e], w1 = p1[e];
        const T* vp = vb + e;
        for (int j = 0; j < DB; ++j) {
          const V x = in_reg(ld<BC, V>(vp + j * LP));
          acc0[j] += w0 * x;
          acc1[j] += w1 * x;
        }
      }
    } else if (r < kh) {  // the first row's only (r < dsh)
      const V* p = P0 + r * ne;
      for (int e = 0; e < ne; ++e) {
        const V w = p[e];
        const T* vp = vb + e;
        for (int j = 0; j < DB; ++j) acc0[j] += w * ld<BC, V>(vp + j * LP);
      }
    } else {  // the second row's only (r = kh - 1 + dsh)
      const V* p = P1 + (r - dsh) * ne;
      for (int e = 0; e < ne; ++e) {
        const V w = p[e];
        const T* vp = vb + e;
        for (int j = 0; j < DB; ++j) acc1[j] += w * ld<BC, V>(vp + j * LP);
      }
    }
  }
  for (int j = 0; j < DB; ++j) {
    out0[j] = acc0[j];
    out1[j] = acc1[j];
  }
}

// Calls block(integral_constant<DB>, d0) over channel blocks of 8, 4, 2, 1.
template <typename Block>
inline void channel_blocks(int D, Block&& block) {
  int d0 = 0;
  for (; d0 + 8 <= D; d0 += 8) block(std::integral_constant<int, 8>(), d0);
  if (D - d0 >= 4) {
    block(std::integral_constant<int, 4>(), d0);
    d0 += 4;
  }
  if (D - d0 >= 2) {
    block(std::integral_constant<int, 2>(), d0);
    d0 += 2;
  }
  if (D - d0 >= 1) block(std::integral_constant<int, 1>(), d0);
}

// o[l*xs + (d0 + j)*cs] = acc[j][l] for lanes l < nv: lane l is one position, j a channel.
template <int DB, typename T, typename V>
inline void store_lanes(V* acc, int nv, T* o, int64_t xs, int64_t cs, int d0) {
  if (DB == 8 && cs == 1) {
    V t[NL];  // the 8 channel vectors (then zeros when NL = 16): t[l] = lane l's 8 channels
    for (int j = 0; j < NL; ++j) t[j] = j < DB ? acc[j] : V{};
    transpose_nl(t);
    for (int l = 0; l < nv; ++l) std::memcpy(o + l * xs + d0, &t[l], DB * sizeof(T));
    return;
  }
  for (int l = 0; l < nv; ++l)
    for (int j = 0; j < DB; ++j) o[l * xs + (d0 + j) * cs] = acc[j][l];
}

// Window starts of one residue class of one axis (group coordinates).
struct Axis {
  int G;
  std::vector<int> s;
};

inline Axis make_axis(int L, int k, int d, int r) {
  Axis a;
  a.G = (L - r + d - 1) / d;
  a.s.resize(a.G);
  for (int j = 0; j < a.G; ++j) a.s[j] = std::min(std::max(j - k / 2, 0), a.G - k);
  return a;
}

// A task's transposed copy of rows (thread-local, reused from task to task). Rows are only
// ever written in their data columns (gather_rows; its NL-wide stores put zeros past the
// width), so the zero padding stays: it is cleared only when the buffer takes another layout
// (channels, row length, width) or grows, not for every task (on maps of a few dozen columns,
// clearing every task's buffers was a noticeable part of the forward).
template <typename T>
struct Rows {
  std::vector<T> v;
  int64_t C = -1, LP = -1, Gw = -1;
  T* prepare(int rows, int C_, int64_t LP_, int Gw_) {
    const size_t n = (size_t)rows * C_ * LP_;
    if (C != C_ || LP != LP_ || Gw != Gw_) {
      v.assign(n, T(0));
      C = C_;
      LP = LP_;
      Gw = Gw_;
    } else if (v.size() < n) {
      v.resize(n, T(0));
    }
    return v.data();
  }
  T* data() { return v.data(); }
};

struct Strides {
  int64_t s[5];
};

inline Strides strides_of(const at::Tensor& t) {
  Strides st;
  for (int i = 0; i < 5; ++i) st.s[i] = t.stride(i);
  return st;
}

template <typename T>
struct Problem {
  int B, NH, H, W, D, Dv, kh, kw, dh, dw;
  T scale;
  const T *q, *k, *v, *rpb, *dout, *gattn;
  Strides sq, sk, sv, sdo;
  T *out, *attn, *dq, *dk, *dv;
  Strides so, sdq, sdk, sdv;
  double* drpb_part;  // [work items][(2kh-1)(2kw-1)]
  // Backward with several row chunks per task: dk / dv of the key rows that two chunks reach,
  // one part per chunk, summed after the chunks ran: [boundary][side][kh rows][GwM][C].
  T *dk_part, *dv_part;
  int GwM;
  uint64_t call;  // a number of its own per forward / backward call (keys per-thread caches)
};

std::atomic<uint64_t> g_calls{0};

// A block of NL consecutive queries x0.. of a row (only columns matter; rows are shared).
// Its logits are "entries" 0..ne-1 per window row:
//  * relative (abs = false): entry e is the key at column x + lo + e - (kw-1) for lane x, i.e.
//    extended index lo + e (= its RPB column); key vectors are contiguous loads;
//  * absolute (abs = true): entry e is the key at column lo + e for every lane; key vectors are
//    broadcasts and the RPB column differs per lane.
// The block takes whichever has fewer entries (interior: relative, kw entries; maps about as
// narrow as the window: absolute, e.g. kw entries when every window is the whole row).
// f[l] is the entry of lane l's first window position; mask[e] flags lanes whose window holds e.
template <typename T, typename V>
struct Block {
  int x0, nv, lo, ne;
  bool abs, full;  // full: every lane sees every entry (no masking needed)
  int f[NL], sw[NL];
  V mask[32];

  void init(const Axis& ax, int x0_, int kw) {
    x0 = x0_;
    nv = std::min(NL, ax.G - x0);
    int es[NL];
    int emin = 1 << 30, emax = -1;
    for (int l = 0; l < NL; ++l) {
      const int x = x0 + std::min(l, nv - 1);
      sw[l] = ax.s[x];
      es[l] = ax.s[x] - x + kw - 1;
      emin = std::min(emin, es[l]);
      emax = std::max(emax, es[l]);
    }
    const int ne_rel = emax + kw - emin;
    const int ne_abs = sw[nv - 1] + kw - sw[0];
    abs = ne_abs < ne_rel;
    lo = abs ? sw[0] : emin;
    ne = abs ? ne_abs : ne_rel;
    for (int l = 0; l < NL; ++l) f[l] = (abs ? sw[l] : es[l]) - lo;
    full = nv == NL && ne == kw;
    for (int e = 0; e < ne; ++e) {
      V m;
      for (int l = 0; l < NL; ++l) m[l] = (l < nv && e >= f[l] && e < f[l] + kw) ? T(1) : T(0);
      mask[e] = m;
    }
  }
  // Pointer offset (in columns, from the padded row start PL) of entry 0 for this block.
  int key_col0(int kw) const { return abs ? lo : x0 + lo - (kw - 1); }
};

// One task: a (batch, head, row residue, column residue) sub-grid; transposed copies.
template <typename T>
struct Task {
  int b, h, rh, rw, Gh, Gw, PL, nqb;
  int64_t LP;
  Axis ay, ax;
  // This work item's chunk of query rows [y0, y1) (chunk c of nch), and the key rows its
  // windows reach [ky0, ky1). Buffers hold query rows from y0 and key rows from ky0: all of
  // them, or (streamed, see forward_task) the last qring / kring in a ring.
  int64_t task;
  int c, nch, y0, y1, ky0, ky1, qring, kring;

  Task(const Problem<T>& P, int64_t item, int nch_) {
    nch = nch_;
    c = item % nch;
    int64_t t = item / nch;
    task = t;
    rw = t % P.dw;
    t /= P.dw;
    rh = t % P.dh;
    t /= P.dh;
    h = t % P.NH;
    b = t / P.NH;
    ay = make_axis(P.H, P.kh, P.dh, rh);
    ax = make_axis(P.W, P.kw, P.dw, rw);
    Gh = ay.G;
    Gw = ax.G;
    PL = P.kw - 1;
    LP = PL + Gw + NL + P.kw + std::max(8, NL);
    nqb = (Gw + NL - 1) / NL;
    y0 = (int)((int64_t)c * Gh / nch);
    y1 = (int)((int64_t)(c + 1) * Gh / nch);
    ky0 = ay.s[y0];
    ky1 = ay.s[y1 - 1] + P.kh;
    qring = y1 - y0;
    kring = ky1 - ky0;
  }
  // Buffer row offsets (in elements) of query row y / key row r for C channels.
  int64_t qrow(int y, int C) const { return (int64_t)((y - y0) % qring) * C * LP; }
  int64_t krow(int r, int C) const { return (int64_t)((r - ky0) % kring) * C * LP; }

  // src[b, h, rh + dh*y, rw + dw*x, c] -> buf[((y - r0)*C + c)*LP + PL + x] for rows
  // r0 <= y < r1, zero padding elsewhere.
  void gather(const Problem<T>& P, const T* src, const Strides& st, int C, Rows<T>& buf,
              int r0, int r1) const {
    gather_rows(P, src, st, C, buf.prepare(r1 - r0, C, LP, Gw), r0, r1, r0, r1 - r0);
  }
  // Streamed tasks: the key and value rows query row y's window reaches that are not copied
  // yet (rows [kend, s(y) + kh)), into the key ring; kend moves past them.
  void stream_keys(const Problem<T>& P, T* KT, T* VT, int y, int& kend) const {
    const int kn = ay.s[y] + P.kh;
    gather_rows(P, P.k, P.sk, P.D, KT, kend, kn, ky0, kring);
    gather_rows(P, P.v, P.sv, P.Dv, VT, kend, kn, ky0, kring);
    kend = std::max(kend, kn);
  }
  // Rows r0 <= y < r1 into buffer rows (y - base) % ring (their padding already zero).
  void gather_rows(const Problem<T>& P, const T* src, const Strides& st, int C, T* buf, int r0,
                   int r1, int base_row, int ring) const {
    const T* base = src + b * st.s[0] + h * st.s[1];
    using V = typename VecOf<T>::type;
    const int C8 = st.s[4] == 1 ? C / NL * NL : 0;  // channels moved by NL x NL transposes
    for (int y = r0; y < r1; ++y) {
      const T* row = base + (int64_t)(rh + P.dh * y) * st.s[2];
      T* dst = buf + (int64_t)((y - base_row) % ring) * C * LP + PL;
      if (y + 1 < r1) {  // the start of the next row: strided reads the hardware does not see
        const T* nrow = row + (int64_t)P.dh * st.s[2];
        for (int x = 0; x < std::min(Gw, 2 * NL); ++x)
          for (int c = 0; c < C; c += 64 / (int)sizeof(T))
            __builtin_prefetch(nrow + (int64_t)(rw + P.dw * x) * st.s[3] + c * st.s[4]);
      }
      for (int x0 = 0; x0 < Gw; x0 += NL) {
        const int nx = std::min(NL, Gw - x0);
        if (x0 + 2 * NL < Gw) {  // the next blocks' rows: strided reads the hardware misses
          for (int l = 0; l < NL; ++l) {
            const T* pf = row + (int64_t)(rw + P.dw * (x0 + 2 * NL + l)) * st.s[3];
            for (int c = 0; c < C; c += 64 / (int)sizeof(T)) __builtin_prefetch(pf + c * st.s[4]);
          }
        }
        for (int c0 = 0; c0 < C8; c0 += NL) {
          V r[NL];
          for (int l = 0; l < NL; ++l)
            r[l] = l < nx ? loadu<V>(row + (int64_t)(rw + P.dw * (x0 + l)) * st.s[3] + c0) : V{};
          transpose_nl(r);
          for (int j = 0; j < NL; ++j) storeu<V>(dst + (int64_t)(c0 + j) * LP + x0, r[j]);
        }
        for (int x = x0; x < x0 + nx; ++x) {
          const T* p = row + (int64_t)(rw + P.dw * x) * st.s[3];
          for (int c = C8; c < C; ++c) dst[c * LP + x] = p[c * st.s[4]];
        }
      }
    }
  }

  template <typename V>
  std::vector<Block<T, V>> blocks(int kw) const {
    std::vector<Block<T, V>> out((Gw + NL - 1) / NL);
    for (size_t i = 0; i < out.size(); ++i) out[i].init(ax, (int)i * NL, kw);
    return out;
  }
};

// sum over (window row i, entry e) of W[i, e] * X[key of (i, e)] for channels d0..d0+DB-1.
template <int DB, typename T, typename V>
inline void block_wsum_n(const Block<T, V>& bk, const V* Wt, int rows, const T* const* rowp,
                         int64_t off, int64_t LP, V* acc) {
  if (bk.abs)
    wsum_n<DB, true, T, V>(Wt, rows, bk.ne, rowp, off, LP, acc);
  else
    wsum_n<DB, false, T, V>(Wt, rows, bk.ne, rowp, off, LP, acc);
}

// L[i*ne + e] = a . XT[key of (i, e)] for the block's lanes (a: the lanes' own vectors in AT).
template <typename T, typename V>
inline void block_dots(const Task<T>& tk, const Block<T, V>& bk, const T* AT, const T* XT, int C,
                       int y, int sh, int kh, int kw, V* L) {
  const T* ab = AT + tk.qrow(y, C) + tk.PL + bk.x0;
  for (int i = 0; i < kh; ++i) {
    const T* xb = XT + tk.krow(sh + i, C) + tk.PL + bk.key_col0(kw);
    if (bk.abs)
      dots<true, T, V>(ab, xb, C, tk.LP, bk.ne, L + i * bk.ne);
    else
      dots<false, T, V>(ab, xb, C, tk.LP, bk.ne, L + i * bk.ne);
  }
}

// block_dots for query rows y and y + 1 (same block) at once: L0 of row y, L1 of row y + 1;
// a key row both windows hold is read once for both.
template <typename T, typename V>
inline void block_dots2(const Task<T>& tk, const Block<T, V>& bk, const T* AT, const T* XT,
                        int C, int y, int kh, int kw, V* L0, V* L1) {
  const int sh0 = tk.ay.s[y], sh1 = tk.ay.s[y + 1];
  const T* a0 = AT + tk.qrow(y, C) + tk.PL + bk.x0;
  const T* a1 = AT + tk.qrow(y + 1, C) + tk.PL + bk.x0;
  const int ne = bk.ne;
  for (int r = sh0; r < sh1 + kh; ++r) {
    const int i0 = r - sh0, i1 = r - sh1;
    const T* xb = XT + tk.krow(r, C) + tk.PL + bk.key_col0(kw);
    if (i0 < kh && i1 >= 0) {
      if (bk.abs)
        dots2<true, T, V>(a0, a1, xb, C, tk.LP, ne, L0 + i0 * ne, L1 + i1 * ne);
      else
        dots2<false, T, V>(a0, a1, xb, C, tk.LP, ne, L0 + i0 * ne, L1 + i1 * ne);
    } else {
      const T* a = i0 < kh ? a0 : a1;
      V* o = i0 < kh ? L0 + i0 * ne : L1 + i1 * ne;
      if (bk.abs)
        dots<true, T, V>(a, xb, C, tk.LP, ne, o);
      else
        dots<false, T, V>(a, xb, C, tk.LP, ne, o);
    }
  }
}

// RPB of absolute blocks as lane vectors: [RPB row][block][entry] (the RPB column of entry e
// differs per lane there); empty when there is no RPB or no absolute block.
template <typename T, typename V>
std::vector<V> abs_bias_table(const Problem<T>& P, const Task<T>& tk,
                              const std::vector<Block<T, V>>& blocks) {
  std::vector<V> out;
  bool any = false;
  for (const auto& bk : blocks) any = any || bk.abs;
  if (!P.rpb || !any) return out;
  const int kh = P.kh, kw = P.kw, NE = 2 * kw - 1;
  out.assign((size_t)(2 * kh - 1) * tk.nqb * NE, V{});
  const T* rpbh = P.rpb + (int64_t)tk.h * (2 * kh - 1) * NE;
  for (int rr = 0; rr < 2 * kh - 1; ++rr)
    for (const auto& bk : blocks) {
      if (!bk.abs) continue;
      for (int e = 0; e < bk.ne; ++e) {
        V bias;
        for (int l = 0; l < NL; ++l) {
          // key column lo + e seen from query x0 + l: RPB column (lo + e) - x + kw - 1
          const int c = bk.lo + e - (bk.x0 + l) + kw - 1;
          bias[l] = rpbh[rr * NE + std::min(std::max(c, 0), NE - 1)];
        }
        out[((int64_t)rr * tk.nqb + bk.x0 / NL) * NE + e] = bias;
      }
    }
  return out;
}

// A task's column blocks and its RPB table of absolute blocks depend only on its head and its
// sub-grid width (all tasks of a call share the kernel, the RPB and the map): kept per thread
// for the last two (head, width) pairs of the current call (a map's residue classes have at
// most two widths), so that tasks of small sub-grids (large dilations) do not rebuild them.
template <typename T, typename V>
struct BlockTables {
  uint64_t call = 0;
  int h = -1, Gw = -1;
  std::vector<Block<T, V>> blocks;
  std::vector<V> absb;
};

template <typename T, typename V>
const BlockTables<T, V>& block_tables(const Problem<T>& P, const Task<T>& tk) {
  static thread_local BlockTables<T, V> cache[2];
  for (const auto& c : cache)
    if (c.call == P.call && c.h == tk.h && c.Gw == tk.Gw) return c;
  BlockTables<T, V>& c = cache[tk.Gw & 1];
  c.blocks = tk.template blocks<V>(P.kw);
  c.absb = abs_bias_table<T, V>(P, tk, c.blocks);
  c.call = P.call;
  c.h = tk.h;
  c.Gw = tk.Gw;
  return c;
}

// Logits (scaled, + RPB) of one block into L[i*ne + e], then the masked softmax in place:
// L = exp(logit - max) (0 outside the windows), normalised when `normalize`; returns 1 / sum.
// softmax_of: the same from logits already in L (q.k, not yet scaled).
template <typename T, typename V>
inline V softmax_of(const Problem<T>& P, const Task<T>& tk, const Block<T, V>& bk, int y, V* L,
                    bool normalize, const V* absbias) {
  const int kh = P.kh, kw = P.kw;
  const int sh = tk.ay.s[y];
  const int ne = bk.ne;
  const V sc = splat<V>(P.scale);
  const V zero = V{};
  const V ninf = splat<V>(-std::numeric_limits<T>::infinity());
  V mm[4] = {ninf, ninf, ninf, ninf};  // independent running maxima (no one long chain)
  const T* rpbh = P.rpb ? P.rpb + (int64_t)tk.h * (2 * kh - 1) * (2 * kw - 1) : nullptr;
  for (int i = 0; i < kh; ++i) {
    V* Li = L + i * ne;
    const T* rr = rpbh ? rpbh + (int64_t)(sh + i - y + kh - 1) * (2 * kw - 1) : nullptr;
    for (int e = 0; e < ne; ++e) {
      V l = Li[e] * sc;
      if (rr && !bk.abs) {
        l += rr[bk.lo + e];
      } else if (rr) {
        l += absbias[((int64_t)(sh + i - y + kh - 1) * tk.nqb + bk.x0 / NL) * (2 * kw - 1) + e];
      }
      Li[e] = l;
      V& m = mm[(i * ne + e) & 3];
      if (bk.full)
        m = l > m ? l : m;
      else
        m = ((bk.mask[e] > zero) & (l > m)) ? l : m;
    }
  }
  mm[0] = mm[0] > mm[1] ? mm[0] : mm[1];
  mm[2] = mm[2] > mm[3] ? mm[2] : mm[3];
  V m = mm[0] > mm[2] ? mm[0] : mm[2];
  m = m > ninf ? m : zero;  // lanes past the end of the row
  V ss[2] = {zero, zero};
  const V far = splat<V>(T(-80));
  if (bk.full) {
    for (int i = 0; i < kh * ne; ++i) {
      const V p = vexp(L[i] - m);
      L[i] = p;
      ss[i & 1] += p;
    }
  } else {
    for (int i = 0; i < kh; ++i)
      for (int e = 0; e < ne; ++e) {
        V a = L[i * ne + e] - m;
        a = bk.mask[e] > zero ? a : far;
        const V p = vexp(a) * bk.mask[e];
        L[i * ne + e] = p;
        ss[e & 1] += p;
      }
  }
  V s = ss[0] + ss[1];
  s = s > zero ? s : splat<V>(T(1));
  const V inv = splat<V>(T(1)) / s;
  if (normalize)
    for (int i = 0; i < kh * ne; ++i) L[i] = L[i] * inv;
  return inv;
}

template <typename T, typename V>
inline V block_softmax(const Problem<T>& P, const Task<T>& tk, const Block<T, V>& bk,
                       const T* QT, const T* KT, int y, V* L, bool normalize,
                       const V* absbias) {
  block_dots<T, V>(tk, bk, QT, KT, P.D, y, tk.ay.s[y], P.kh, P.kw, L);
  return softmax_of<T, V>(P, tk, bk, y, L, normalize, absbias);
}

// rowp[i] = the block's entry 0 of key row r0 + i in XT, i < n.
template <typename T, typename V>
inline void key_rows(const Task<T>& tk, const Block<T, V>& bk, const T* XT, int C, int r0, int n,
                     int kw, const T** rowp) {
  for (int i = 0; i < n; ++i) rowp[i] = XT + tk.krow(r0 + i, C) + tk.PL + bk.key_col0(kw);
}

// dst[b,h,Y,X,c] = mult * lm * sum_{i,e} W[i,e] * XT[key of (i, e)][c] for the block's queries.
template <typename T, typename V>
inline void block_wsum(const Problem<T>& P, const Task<T>& tk, const Block<T, V>& bk,
                       const V* Wt, const T* XT, int C, int y, T mult, const V& lm, T* dst,
                       const Strides& sd) {
  const T* rowp[16];  // kh <= 15 (check_inputs)
  key_rows(tk, bk, XT, C, tk.ay.s[y], P.kh, P.kw, rowp);
  T* ob = dst + tk.b * sd.s[0] + tk.h * sd.s[1] + (int64_t)(tk.rh + P.dh * y) * sd.s[2];
  const V f = lm * mult;
  channel_blocks(C, [&](auto DBc, int d0) {
    constexpr int DB = decltype(DBc)::value;
    V acc[DB];
    block_wsum_n<DB, T, V>(bk, Wt, P.kh, rowp, d0 * tk.LP, tk.LP, acc);
    for (int j = 0; j < DB; ++j) acc[j] *= f;
    store_lanes<DB, T, V>(acc, bk.nv, ob + (int64_t)(tk.rw + P.dw * bk.x0) * sd.s[3],
                          P.dw * sd.s[3], sd.s[4], d0);
  });
}

// block_wsum for query rows y and y + 1 (weights W0, W1; factors lm0, lm1) at once.
template <typename T, typename V>
inline void block_wsum2(const Problem<T>& P, const Task<T>& tk, const Block<T, V>& bk,
                        const V* W0, const V* W1, const T* XT, int C, int y, T mult,
                        const V& lm0, const V& lm1, T* dst, const Strides& sd) {
  const int sh = tk.ay.s[y], dsh = tk.ay.s[y + 1] - sh;
  const T* rowp[16];
  key_rows(tk, bk, XT, C, sh, P.kh + dsh, P.kw, rowp);
  T* ob0 = dst + tk.b * sd.s[0] + tk.h * sd.s[1] + (int64_t)(tk.rh + P.dh * y) * sd.s[2] +
           (int64_t)(tk.rw + P.dw * bk.x0) * sd.s[3];
  T* ob1 = ob0 + (int64_t)P.dh * sd.s[2];
  const V f0 = lm0 * mult, f1 = lm1 * mult;
  channel_blocks(C, [&](auto DBc, int d0) {
    constexpr int DB = decltype(DBc)::value;
    V acc0[DB], acc1[DB];
    if (bk.abs)
      wsum2_n<DB, true, T, V>(W0, W1, P.kh, dsh, bk.ne, rowp, d0 * tk.LP, tk.LP, acc0, acc1);
    else
      wsum2_n<DB, false, T, V>(W0, W1, P.kh, dsh, bk.ne, rowp, d0 * tk.LP, tk.LP, acc0, acc1);
    for (int j = 0; j < DB; ++j) {
      acc0[j] *= f0;
      acc1[j] *= f1;
    }
    store_lanes<DB, T, V>(acc0, bk.nv, ob0, P.dw * sd.s[3], sd.s[4], d0);
    store_lanes<DB, T, V>(acc1, bk.nv, ob1, P.dw * sd.s[3], sd.s[4], d0);
  });
}

// Whether a task streams its rows through rings (forward_task): sub-grids of >= 128 columns.
template <typename T>
inline bool streams(const Task<T>& tk) {
  return tk.Gw >= 128;
}

template <typename T>
void forward_task(const Problem<T>& P, int64_t item, int nch) {
  using V = typename VecOf<T>::type;
  Task<T> tk(P, item, nch);
  const int kh = P.kh, kw = P.kw, KK = kh * kw;
  // Narrow maps (columns < 128): column blocks outside, rows inside (a block's strip of keys
  // and values stays in the cache from row to row), all rows copied first. Wide maps: rows
  // outside (the kh key rows of a query row, across the whole width, are what stays in the
  // cache), and the rows are streamed: query rows two at a time and key / value rows as the
  // windows reach them, into rings of 2 and kh + 1 rows (a pair of query rows reads kh + 1 key
  // rows at most), so that the copies stay in the core's cache too. Measured: blocks outside
  // is faster on 56 columns, rows outside on 304 (by about a quarter); the switch at 128 lies
  // between the two.
  const bool stream = streams(tk);
  static thread_local Rows<T> QT, KT, VT;
  if (stream) {
    tk.qring = std::min(2, tk.qring);
    tk.kring = std::min(kh + 1, tk.kring);
    QT.prepare(tk.qring, P.D, tk.LP, tk.Gw);
    KT.prepare(tk.kring, P.D, tk.LP, tk.Gw);
    VT.prepare(tk.kring, P.Dv, tk.LP, tk.Gw);
  } else {
    tk.gather(P, P.q, P.sq, P.D, QT, tk.y0, tk.y1);
    tk.gather(P, P.k, P.sk, P.D, KT, tk.ky0, tk.ky1);
    tk.gather(P, P.v, P.sv, P.Dv, VT, tk.ky0, tk.ky1);
  }
  static thread_local std::vector<V> L, L1;
  L.resize((size_t)kh * (2 * kw - 1));
  L1.resize((size_t)kh * (2 * kw - 1));
  const BlockTables<T, V>& tables = block_tables<T, V>(P, tk);
  const std::vector<Block<T, V>>& blocks = tables.blocks;
  const std::vector<V>& absb = tables.absb;
  const bool attn = P.attn != nullptr;
  auto write_attn = [&](const Block<T, V>& bk, int y, const V* W) {
    const int Y = tk.rh + P.dh * y;
    for (int l = 0; l < bk.nv; ++l) {
      const int X = tk.rw + P.dw * (bk.x0 + l);
      T* a = P.attn + ((((int64_t)tk.b * P.NH + tk.h) * P.H + Y) * P.W + X) * KK;
      for (int i = 0; i < kh; ++i)
        for (int c = 0; c < kw; ++c) a[i * kw + c] = W[i * bk.ne + bk.f[l] + c][l];
    }
  };
  auto one = [&](const Block<T, V>& bk, int y) {
    const V inv =
        block_softmax<T, V>(P, tk, bk, QT.data(), KT.data(), y, L.data(), attn, absb.data());
    block_wsum<T, V>(P, tk, bk, L.data(), VT.data(), P.Dv, y, T(1),
                     attn ? splat<V>(T(1)) : inv, P.out, P.so);
    if (attn) write_attn(bk, y, L.data());
  };
  // Query rows y and y + 1 together: each key / value row both windows hold is read once.
  auto two = [&](const Block<T, V>& bk, int y) {
    block_dots2<T, V>(tk, bk, QT.data(), KT.data(), P.D, y, kh, kw, L.data(), L1.data());
    const V inv0 = softmax_of<T, V>(P, tk, bk, y, L.data(), attn, absb.data());
    const V inv1 = softmax_of<T, V>(P, tk, bk, y + 1, L1.data(), attn, absb.data());
    const V one_v = splat<V>(T(1));
    block_wsum2<T, V>(P, tk, bk, L.data(), L1.data(), VT.data(), P.Dv, y, T(1),
                      attn ? one_v : inv0, attn ? one_v : inv1, P.out, P.so);
    if (attn) {
      write_attn(bk, y, L.data());
      write_attn(bk, y + 1, L1.data());
    }
  };
  auto rows = [&](const Block<T, V>& bk, int y) {
    if (y + 1 < tk.y1)
      two(bk, y);
    else
      one(bk, y);
  };
  if (!stream) {
    for (const Block<T, V>& bk : blocks)
      for (int y = tk.y0; y < tk.y1; y += 2) rows(bk, y);
  } else {
    int kend = tk.ky0;  // key rows [ky0, kend) copied so far
    for (int y = tk.y0; y < tk.y1; y += 2) {
      const int yn = std::min(y + 2, tk.y1);
      tk.gather_rows(P, P.q, P.sq, P.D, QT.data(), y, yn, tk.y0, tk.qring);
      tk.stream_keys(P, KT.data(), VT.data(), yn - 1, kend);
      for (const Block<T, V>& bk : blocks) rows(bk, y);
    }
  }
}

template <typename T>
void backward_task(const Problem<T>& P, int64_t t, int nch) {
  using V = typename VecOf<T>::type;
  Task<T> tk(P, t, nch);
  const int kh = P.kh, kw = P.kw, KK = kh * kw, D = P.D, Dv = P.Dv, NE = 2 * kw - 1;
  const int Gh = tk.Gh, Gw = tk.Gw, PL = tk.PL;
  const int64_t LP = tk.LP;
  static thread_local Rows<T> QT, KT, VT, DOT;
  const bool stream = streams(tk);  // rows copied as the passes reach them (see forward_task)
  if (!stream) {
    tk.gather(P, P.q, P.sq, D, QT, tk.y0, tk.y1);
    tk.gather(P, P.k, P.sk, D, KT, tk.ky0, tk.ky1);
    tk.gather(P, P.v, P.sv, Dv, VT, tk.ky0, tk.ky1);
    tk.gather(P, P.dout, P.sdo, Dv, DOT, tk.y0, tk.y1);
  }
  const BlockTables<T, V>& tables = block_tables<T, V>(P, tk);
  const std::vector<Block<T, V>>& blocks = tables.blocks;
  const std::vector<V>& absb = tables.absb;

  // Query rows whose windows hold key row r: [ylo[r], yhi[r]]. Per key column c: the extended
  // indices [eklo, ekhi] and the query columns [xqlo, xqhi] it is reached from.
  // (these tables, like the buffers below, are reused per thread: small sub-grids make many
  // tasks, and allocations cost there)
  static thread_local std::vector<int> ylo, yhi, eklo, ekhi, xqlo, xqhi, kE0, kE1, kX0, kX1;
  ylo.assign(Gh, 1 << 30);
  yhi.assign(Gh, -1);
  eklo.assign(Gw, 1 << 30);
  ekhi.assign(Gw, -1);
  xqlo.assign(Gw, 1 << 30);
  xqhi.assign(Gw, -1);
  for (int y = 0; y < Gh; ++y)
    for (int i = 0; i < kh; ++i) {
      const int r = tk.ay.s[y] + i;
      ylo[r] = std::min(ylo[r], y);
      yhi[r] = std::max(yhi[r], y);
    }
  for (int x = 0; x < Gw; ++x)
    for (int c = 0; c < kw; ++c) {
      const int kc = tk.ax.s[x] + c, e = tk.ax.s[x] - x + kw - 1 + c;
      eklo[kc] = std::min(eklo[kc], e);
      ekhi[kc] = std::max(ekhi[kc], e);
      xqlo[kc] = std::min(xqlo[kc], x);
      xqhi[kc] = std::max(xqhi[kc], x);
    }
  // Key blocks: which query entries each reads, relative (extended index) or absolute (query
  // column); the cheaper over the row decides the ring layout of this task.
  const int nkb = (Gw + NL - 1) / NL;
  kE0.resize(nkb);
  kE1.resize(nkb);
  kX0.resize(nkb);
  kX1.resize(nkb);
  int64_t cost_rel = 0, cost_abs = 0;
  for (int kb = 0; kb < nkb; ++kb) {
    const int kc0 = kb * NL, nv = std::min(NL, Gw - kc0);
    kE0[kb] = kX0[kb] = 1 << 30;
    kE1[kb] = kX1[kb] = -1;
    for (int l = 0; l < nv; ++l) {
      kE0[kb] = std::min(kE0[kb], eklo[kc0 + l]);
      kE1[kb] = std::max(kE1[kb], ekhi[kc0 + l]);
      kX0[kb] = std::min(kX0[kb], xqlo[kc0 + l]);
      kX1[kb] = std::max(kX1[kb], xqhi[kc0 + l]);
    }
    cost_rel += kE1[kb] - kE0[kb] + 1;
    cost_abs += kX1[kb] - kX0[kb] + 1;
  }
  const bool ring_abs = cost_abs < cost_rel;
  // Ring of query rows: P and dS per (window row i, entry) -- relative: [i][e][PL + x];
  // absolute: [i][x][key column] (rows of LPk).
  const int64_t LPk = Gw + 2 * NL;  // room for the NL-entry stores of the last entries
  // ring: room for the query rows of two key rows at once (pass2 takes key rows in pairs)
  int ring = 1;
  for (int r = 0; r < Gh; ++r)
    ring = std::max(ring, yhi[std::min(r + 1, Gh - 1)] - ylo[r] + 1);
  const int64_t slot_size = ring_abs ? (int64_t)kh * Gw * LPk : (int64_t)kh * NE * LP;
  // reused from task to task (each slot is cleared before a row is written to it): fresh
  // buffers of this size cost page faults on every task
  static thread_local std::vector<T> PB, SB;
  if (PB.size() < (size_t)(ring * slot_size)) {
    PB.resize((size_t)(ring * slot_size));
    SB.resize((size_t)(ring * slot_size));
  }
  // Streamed: query and dout rows in a ring of the same length as that of P and dS (pass 2 of
  // a key row reads the query rows pass 1 wrote there), key and value rows in one of kh + 1
  // (pass 1 of two query rows reads kh + 1 key rows at most; pass 2 reads none).
  int kend = tk.ky0;  // key rows [ky0, kend) copied so far
  if (stream) {
    tk.qring = std::min(ring, tk.qring);
    tk.kring = std::min(kh + 1, tk.kring);
    QT.prepare(tk.qring, D, LP, Gw);
    DOT.prepare(tk.qring, Dv, LP, Gw);
    KT.prepare(tk.kring, D, LP, Gw);
    VT.prepare(tk.kring, Dv, LP, Gw);
  }
  // Query rows [y, y + n) and the key rows their windows reach, when streamed.
  auto fetch = [&](int y, int n) {
    if (!stream) return;
    tk.gather_rows(P, P.q, P.sq, D, QT.data(), y, y + n, tk.y0, tk.qring);
    tk.gather_rows(P, P.dout, P.sdo, Dv, DOT.data(), y, y + n, tk.y0, tk.qring);
    tk.stream_keys(P, KT.data(), VT.data(), y + n - 1, kend);
  };
  static thread_local std::vector<V> L, DP, L1, DP1, gacc;
  for (auto* b : {&L, &DP, &L1, &DP1}) b->resize((size_t)kh * NE);
  // dS summed per (RPB row, block, entry) as lane vectors; reduced to the RPB table at the end
  // (each block maps (entry, lane) to a fixed RPB column).
  const int nqb = tk.nqb;
  gacc.assign(P.drpb_part ? (size_t)(2 * kh - 1) * nqb * NE : 0, V{});
  const V zero = V{};

  auto clear_slot = [&](int y) {
    const int slot = y % ring;
    std::fill(PB.data() + slot * slot_size, PB.data() + (slot + 1) * slot_size, T(0));
    std::fill(SB.data() + slot * slot_size, SB.data() + (slot + 1) * slot_size, T(0));
  };
  // From P (in L) and dP (in DP) of query row y's block: dS (into DP), its RPB sums, and P and
  // dS into the ring.
  auto row_tail = [&](const Block<T, V>& bk, int y, V* L, V* DP) {
    const int ne = bk.ne;
    const int sh = tk.ay.s[y];
    const int Y = tk.rh + P.dh * y;
    T* pb = PB.data() + (y % ring) * slot_size;
    T* sb = SB.data() + (y % ring) * slot_size;
    if (P.gattn) {
      for (int l = 0; l < bk.nv; ++l) {
        const int X = tk.rw + P.dw * (bk.x0 + l);
        const T* g = P.gattn + ((((int64_t)tk.b * P.NH + tk.h) * P.H + Y) * P.W + X) * KK;
        for (int i = 0; i < kh; ++i)
          for (int c = 0; c < kw; ++c) DP[i * ne + bk.f[l] + c][l] += g[i * kw + c];
      }
    }
    V delta = zero;
    for (int i = 0; i < kh * ne; ++i) delta += L[i] * DP[i];
    for (int i = 0; i < kh * ne; ++i) DP[i] = L[i] * (DP[i] - delta);
    if (P.drpb_part) {
      const int qb = bk.x0 / NL;
      for (int i = 0; i < kh; ++i) {
        V* g = gacc.data() + ((int64_t)(sh + i - y + kh - 1) * nqb + qb) * NE;
        for (int e = 0; e < ne; ++e) g[e] += DP[i * ne + e];
      }
    }
    if (ring_abs && bk.abs) {
      // ring[i][x][lo + e] = P[i][e][lane x]: 8x8 transposes of (entries x lanes)
      for (int i = 0; i < kh; ++i)
        for (int e0 = 0; e0 < ne; e0 += NL) {
          V rp[NL], rs[NL];
          for (int j = 0; j < NL; ++j) {
            rp[j] = e0 + j < ne ? L[i * ne + e0 + j] : zero;
            rs[j] = e0 + j < ne ? DP[i * ne + e0 + j] : zero;
          }
          transpose_nl(rp);
          transpose_nl(rs);
          for (int l = 0; l < bk.nv; ++l) {
            const int64_t off = ((int64_t)i * Gw + bk.x0 + l) * LPk + bk.lo + e0;
            storeu<V, T>(pb + off, rp[l]);
            storeu<V, T>(sb + off, rs[l]);
          }
        }
    } else if (!ring_abs && !bk.abs) {
      for (int i = 0; i < kh; ++i)
        for (int e = 0; e < ne; ++e) {
          const int64_t off = ((int64_t)i * NE + bk.lo + e) * LP + PL + bk.x0;
          storeu<V, T>(pb + off, L[i * ne + e]);
          storeu<V, T>(sb + off, DP[i * ne + e]);
        }
    } else {
      for (int l = 0; l < bk.nv; ++l) {
        const int x = bk.x0 + l;
        for (int i = 0; i < kh; ++i)
          for (int c = 0; c < kw; ++c) {
            const int64_t off = ring_abs
                ? ((int64_t)i * Gw + x) * LPk + bk.sw[l] + c
                : ((int64_t)i * NE + bk.sw[l] - x + kw - 1 + c) * LP + PL + x;
            pb[off] = L[i * ne + bk.f[l] + c][l];
            sb[off] = DP[i * ne + bk.f[l] + c][l];
          }
      }
    }
  };
  // Pass 1 of query row y: softmax (recomputed), dP, dS, dq, ring.
  auto pass1 = [&](int y) {
    clear_slot(y);
    const int sh = tk.ay.s[y];
    for (const Block<T, V>& bk : blocks) {
      block_softmax<T, V>(P, tk, bk, QT.data(), KT.data(), y, L.data(), true, absb.data());
      block_dots<T, V>(tk, bk, DOT.data(), VT.data(), Dv, y, sh, kh, kw, DP.data());
      row_tail(bk, y, L.data(), DP.data());
      block_wsum<T, V>(P, tk, bk, DP.data(), KT.data(), D, y, P.scale, splat<V>(T(1)), P.dq,
                       P.sdq);
    }
  };
  // Pass 1 of query rows y and y + 1 at once (key, value rows read once for both).
  auto pass1two = [&](int y) {
    clear_slot(y);
    clear_slot(y + 1);
    const V one_v = splat<V>(T(1));
    for (const Block<T, V>& bk : blocks) {
      block_dots2<T, V>(tk, bk, QT.data(), KT.data(), D, y, kh, kw, L.data(), L1.data());
      softmax_of<T, V>(P, tk, bk, y, L.data(), true, absb.data());
      softmax_of<T, V>(P, tk, bk, y + 1, L1.data(), true, absb.data());
      block_dots2<T, V>(tk, bk, DOT.data(), VT.data(), Dv, y, kh, kw, DP.data(), DP1.data());
      row_tail(bk, y, L.data(), DP.data());
      row_tail(bk, y + 1, L1.data(), DP1.data());
      block_wsum2<T, V>(P, tk, bk, DP.data(), DP1.data(), KT.data(), D, y, P.scale, one_v,
                        one_v, P.dq, P.sdq);
    }
  };

  // Where key row r's dk (which = 0) / dv (1) go: the output row (pb = nullptr), or, for a
  // key row that the previous or next chunk reaches too, this chunk's part for that boundary
  // (summed with the other's after all chunks ran).
  auto key_dest = [&](int r, int which, T*& ob, T*& pb) {
    const int C = which == 0 ? D : Dv;
    const Strides& sd = which == 0 ? P.sdk : P.sdv;
    ob = (which == 0 ? P.dk : P.dv) + tk.b * sd.s[0] + tk.h * sd.s[1] +
         (int64_t)(tk.rh + P.dh * r) * sd.s[2];
    pb = nullptr;
    int64_t bnd = -1, side = 0;
    int j = 0;
    if (ylo[r] < tk.y0) {  // shared with chunk c - 1: boundary c - 1, side 1
      side = 1;
      bnd = tk.task * (nch - 1) + tk.c - 1;
      j = r - tk.ay.s[tk.y0];
    } else if (yhi[r] >= tk.y1) {  // shared with chunk c + 1: boundary c, side 0
      side = 0;
      bnd = tk.task * (nch - 1) + tk.c;
      j = r - tk.ay.s[tk.y1];
    }
    if (bnd >= 0)
      pb = (which == 0 ? P.dk_part : P.dv_part) + (((bnd * 2 + side) * kh + j) * P.GwM) * C;
  };

  // dk / dv of key rows r .. r + NR - 1 (NR = 1 or 2), gathered from the ring (key-centric)
  // from this chunk's query rows; with two key rows, each q / dout vector is loaded once for
  // both. Each sum runs over query rows, then entries, in increasing order.
  auto pass2 = [&](int r, auto nrc) {
    constexpr int NR = decltype(nrc)::value;
    int ya[NR], yb[NR];
    for (int u = 0; u < NR; ++u) {
      ya[u] = std::max(ylo[r + u], tk.y0);
      yb[u] = std::min(yhi[r + u], tk.y1 - 1);
    }
    for (int kb = 0; kb < nkb; ++kb) {
      const int kc0 = kb * NL, nv = std::min(NL, Gw - kc0);
      for (int which = 0; which < 2; ++which) {
        const T* buf = which == 0 ? SB.data() : PB.data();
        const T* X = which == 0 ? QT.data() : DOT.data();
        const int C = which == 0 ? D : Dv;
        const T mult = which == 0 ? P.scale : T(1);
        const Strides& sd = which == 0 ? P.sdk : P.sdv;
        T *ob[NR], *pb[NR];
        for (int u = 0; u < NR; ++u) key_dest(r + u, which, ob[u], pb[u]);
        channel_blocks(C, [&](auto DBc, int d0) {
          constexpr int DB = decltype(DBc)::value;
          V acc0[DB], acc1[DB];
          for (int j = 0; j < DB; ++j) acc0[j] = acc1[j] = V{};
          for (int y = ya[0]; y <= yb[NR - 1]; ++y) {
            const int i = r - tk.ay.s[y];
            const bool u0 = y <= yb[0], u1 = NR == 2 && y >= ya[NR - 1];
            const T* xbase = X + tk.qrow(y, C) + (int64_t)d0 * LP;
            const T* slot = buf + (y % ring) * slot_size;
            if (ring_abs) {
              const int64_t istr = (int64_t)Gw * LPk;
              const T* s0 = slot + i * istr + kc0;
              const T* xp0 = xbase + PL;
              if (u0 && u1) {
                for (int x = kX0[kb]; x <= kX1[kb]; ++x) {
                  const V a = loadu<V>(s0 + (int64_t)x * LPk);
                  const V b = loadu<V>(s0 + istr + (int64_t)x * LPk);
                  for (int j = 0; j < DB; ++j) {
                    const V xv = in_reg(splat<V>(xp0[x + j * LP]));
                    acc0[j] += a * xv;
                    acc1[j] += b * xv;
                  }
                }
              } else if (u0) {
                for (int x = kX0[kb]; x <= kX1[kb]; ++x) {
                  const V a = loadu<V>(s0 + (int64_t)x * LPk);
                  for (int j = 0; j < DB; ++j) acc0[j] += a * splat<V>(xp0[x + j * LP]);
                }
              } else {
                for (int x = kX0[kb]; x <= kX1[kb]; ++x) {
                  const V b = loadu<V>(s0 + istr + (int64_t)x * LPk);
                  for (int j = 0; j < DB; ++j) acc1[j] += b * splat<V>(xp0[x + j * LP]);
                }
              }
            } else {
              const int64_t istr = (int64_t)NE * LP;
              const T* s0 = slot + i * istr;
              const int64_t c0 = PL + kc0 + kw - 1;
              if (u0 && u1) {
                // the entries of either row: those of key block kb (e in [kE0, kE1])
                for (int e = kE0[kb]; e <= kE1[kb]; ++e) {
                  const int64_t col = c0 - e;
                  const V a = loadu<V>(s0 + (int64_t)e * LP + col);
                  const V b = loadu<V>(s0 + istr + (int64_t)e * LP + col);
                  const T* xp = xbase + col;
                  for (int j = 0; j < DB; ++j) {
                    const V xv = in_reg(loadu<V>(xp + j * LP));
                    acc0[j] += a * xv;
                    acc1[j] += b * xv;
                  }
                }
              } else if (u0) {
                for (int e = kE0[kb]; e <= kE1[kb]; ++e) {
                  const int64_t col = c0 - e;
                  const V a = loadu<V>(s0 + (int64_t)e * LP + col);
                  const T* xp = xbase + col;
                  for (int j = 0; j < DB; ++j) acc0[j] += a * loadu<V>(xp + j * LP);
                }
              } else {
                for (int e = kE0[kb]; e <= kE1[kb]; ++e) {
                  const int64_t col = c0 - e;
                  const V b = loadu<V>(s0 + istr + (int64_t)e * LP + col);
                  const T* xp = xbase + col;
                  for (int j = 0; j < DB; ++j) acc1[j] += b * loadu<V>(xp + j * LP);
                }
              }
            }
          }
          for (int u = 0; u < NR; ++u) {
            V* acc = u == 0 ? acc0 : acc1;
            for (int j = 0; j < DB; ++j) acc[j] *= mult;
            if (pb[u])
              store_lanes<DB, T, V>(acc, nv, pb[u] + (int64_t)kc0 * C, C, 1, d0);
            else
              store_lanes<DB, T, V>(acc, nv, ob[u] + (int64_t)(tk.rw + P.dw * kc0) * sd.s[3],
                                    P.dw * sd.s[3], sd.s[4], d0);
          }
        });
      }
    }
  };

  // Key rows in pairs; before each, pass 1 of the query rows they need (in pairs too).
  int next = tk.y0;
  for (int r = tk.ky0; r < tk.ky1;) {
    const int nr = r + 1 < tk.ky1 ? 2 : 1;
    const int yb = std::min(yhi[r + nr - 1], tk.y1 - 1);
    while (next <= yb) {
      if (next + 1 <= yb) {
        fetch(next, 2);
        pass1two(next);
        next += 2;
      } else {
        fetch(next, 1);
        pass1(next++);
      }
    }
    if (nr == 2)
      pass2(r, std::integral_constant<int, 2>());
    else
      pass2(r, std::integral_constant<int, 1>());
    r += nr;
  }
  if (P.drpb_part) {
    double* part = P.drpb_part + t * (int64_t)(2 * kh - 1) * NE;
    for (int rr = 0; rr < 2 * kh - 1; ++rr)
      for (const Block<T, V>& bk : blocks) {
        const V* g = gacc.data() + ((int64_t)rr * nqb + bk.x0 / NL) * NE;
        double* row = part + (int64_t)rr * NE;
        for (int e = 0; e < bk.ne; ++e) {
          if (!bk.abs) {
            row[bk.lo + e] += (double)hsum<V, T>(g[e]);
          } else {
            for (int l = 0; l < bk.nv; ++l) {  // masked lanes hold 0; keep columns in range
              const int c = bk.lo + e - (bk.x0 + l) + kw - 1;
              if (c >= 0 && c < NE) row[c] += (double)g[e][l];
            }
          }
        }
      }
  }
}

// dk / dv of the key rows at boundary bi (between chunks c and c + 1 of one task): the sum of
// the two chunks' parts, in that order.
template <typename T>
void sum_boundary(const Problem<T>& P, int64_t bi, int nch) {
  const int64_t t = bi / (nch - 1);
  const int c = (int)(bi % (nch - 1));
  Task<T> tk(P, t * nch + c, nch);
  const int yb = tk.y1;  // first query row of chunk c + 1
  const int r0 = tk.ay.s[yb], r1 = tk.ay.s[yb - 1] + P.kh;  // rows both reach
  for (int which = 0; which < 2; ++which) {
    const int C = which == 0 ? P.D : P.Dv;
    const T* part = which == 0 ? P.dk_part : P.dv_part;
    T* dst = which == 0 ? P.dk : P.dv;
    const Strides& sd = which == 0 ? P.sdk : P.sdv;
    for (int r = r0; r < r1; ++r) {
      const int j = r - r0;
      const T* a = part + ((bi * 2 + 0) * P.kh + j) * P.GwM * C;
      const T* b = part + ((bi * 2 + 1) * P.kh + j) * P.GwM * C;
      T* o = dst + tk.b * sd.s[0] + tk.h * sd.s[1] + (int64_t)(tk.rh + P.dh * r) * sd.s[2];
      for (int x = 0; x < tk.Gw; ++x) {
        T* ox = o + (int64_t)(tk.rw + P.dw * x) * sd.s[3];
        for (int ch = 0; ch < C; ++ch) ox[ch * sd.s[4]] = a[x * C + ch] + b[x * C + ch];
      }
    }
  }
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const c10::optional<at::Tensor>& rpb, int64_t kh, int64_t kw, int64_t dh,
                  int64_t dw) {
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->device().is_cpu(), "na2d cpp backend: tensors must be on the CPU");
    TORCH_CHECK(t->dim() == 5, "na2d cpp backend: q, k, v must be 5-D [B, heads, H, W, D]");
    TORCH_CHECK(t->scalar_type() == q.scalar_type(), "na2d cpp backend: dtypes differ");
  }
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
              "na2d cpp backend: float32 or float64 only (cast half types first)");
  TORCH_CHECK(k.sizes() == q.sizes(), "na2d cpp backend: q and k must have the same shape");
  TORCH_CHECK(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2) &&
                  v.size(3) == q.size(3),
              "na2d cpp backend: v must match q in batch, heads, height and width");
  TORCH_CHECK(kh >= 1 && kw >= 1 && kh % 2 == 1 && kw % 2 == 1, "na2d cpp backend: odd kernels");
  TORCH_CHECK(kw <= 15 && kh <= 15, "na2d cpp backend: kernel sizes up to 15");
  TORCH_CHECK(dh >= 1 && dw >= 1, "na2d cpp backend: dilations >= 1");
  TORCH_CHECK(q.size(2) >= kh * dh && q.size(3) >= kw * dw,
              "na2d cpp backend: the map must be at least kernel_size * dilation per axis");
  if (rpb.has_value()) {
    TORCH_CHECK(rpb->dim() == 3 && rpb->size(0) == q.size(1) && rpb->size(1) == 2 * kh - 1 &&
                    rpb->size(2) == 2 * kw - 1,
                "na2d cpp backend: rpb must be [heads, 2*kh-1, 2*kw-1]");
    TORCH_CHECK(rpb->scalar_type() == q.scalar_type(), "na2d cpp backend: rpb dtype differs");
  }
}

// Row chunks per task: a task's query rows are split into nch chunks of at least
// max(MIN_CHUNK_ROWS, 2 kh) rows, run in parallel like tasks (a map with few tasks, e.g. one
// image of a large map at dilation 1, still spreads over the threads, and each chunk's copies
// of q, k, v stay small enough for the cache). It depends on the shape only, never on the
// thread count, so results are the same with any number of threads. Chunks of >= 2 kh rows
// make every key row reached by at most two chunks (its queries span at most 1.5 kh + 1 rows).
int chunk_min_rows() {
  static const int v = [] {
    const char* e = std::getenv("DINAT_NA_CHUNK_ROWS");
    return e ? std::max(1, std::atoi(e)) : 16;
  }();
  return v;
}

int num_chunks(int64_t H, int64_t kh, int64_t dh) {
  const int64_t gh = H / dh;  // the shortest residue class's rows
  const int64_t m = std::max<int64_t>(chunk_min_rows(), 2 * kh);
  return (int)std::max<int64_t>(1, gh / m);
}

// [B, heads, H, W, C] view of a [B, H, W, heads, C] buffer: the layout the model reshapes for free.
at::Tensor like_canonical(const at::Tensor& x, int64_t C) {
  return at::empty({x.size(0), x.size(2), x.size(3), x.size(1), C}, x.options())
      .permute({0, 3, 1, 2, 4});
}

template <typename T>
Problem<T> make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& rpbc, int64_t kh, int64_t kw, int64_t dh, int64_t dw,
                        double scale) {
  Problem<T> P{};
  P.B = q.size(0);
  P.NH = q.size(1);
  P.H = q.size(2);
  P.W = q.size(3);
  P.D = q.size(4);
  P.Dv = v.size(4);
  P.kh = kh;
  P.kw = kw;
  P.dh = dh;
  P.dw = dw;
  P.scale = (T)scale;
  P.q = q.data_ptr<T>();
  P.k = k.data_ptr<T>();
  P.v = v.data_ptr<T>();
  P.rpb = rpbc.defined() ? rpbc.data_ptr<T>() : nullptr;
  P.sq = strides_of(q);
  P.sk = strides_of(k);
  P.sv = strides_of(v);
  P.call = ++g_calls;
  return P;
}

std::vector<at::Tensor> na2d_forward(const at::Tensor& q, const at::Tensor& k,
                                     const at::Tensor& v, const c10::optional<at::Tensor>& rpb,
                                     int64_t kh, int64_t kw, int64_t dh, int64_t dw, double scale,
                                     bool return_attn) {
  check_inputs(q, k, v, rpb, kh, kw, dh, dw);
  at::Tensor rpbc = rpb.has_value() ? rpb->contiguous() : at::Tensor();
  at::Tensor out = like_canonical(q, v.size(4));
  at::Tensor attn = return_attn ? at::empty({q.size(0), q.size(1), q.size(2), q.size(3), kh * kw},
                                            q.options())
                                : at::empty({0}, q.options());
  const int64_t tasks = q.size(0) * q.size(1) * dh * dw;
  const int nch = num_chunks(q.size(2), kh, dh);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_cpp_forward", [&] {
    Problem<scalar_t> P = make_problem<scalar_t>(q, k, v, rpbc, kh, kw, dh, dw, scale);
    P.out = out.data_ptr<scalar_t>();
    P.so = strides_of(out);
    P.attn = return_attn ? attn.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, tasks * nch, 1, [&](int64_t s, int64_t e) {
      for (int64_t t = s; t < e; ++t) forward_task<scalar_t>(P, t, nch);
    });
  });
  return {out, attn};
}

// The backward into given dq / dk / dv (any strides; every element is written); returns the
// RPB gradient (empty without it).
at::Tensor na2d_backward_out(at::Tensor dq, at::Tensor dk, at::Tensor dv, const at::Tensor& dout,
                             const c10::optional<at::Tensor>& gattn, const at::Tensor& q,
                             const at::Tensor& k, const at::Tensor& v,
                             const c10::optional<at::Tensor>& rpb, int64_t kh, int64_t kw,
                             int64_t dh, int64_t dw, double scale, bool rpb_grad) {
  check_inputs(q, k, v, rpb, kh, kw, dh, dw);
  TORCH_CHECK(dq.sizes() == q.sizes() && dk.sizes() == k.sizes() && dv.sizes() == v.sizes() &&
                  dq.scalar_type() == q.scalar_type() && dk.scalar_type() == q.scalar_type() &&
                  dv.scalar_type() == q.scalar_type(),
              "na2d cpp backend: dq, dk, dv must match q, k, v in shape and dtype");
  TORCH_CHECK(dout.sizes() == v.sizes() && dout.scalar_type() == q.scalar_type(),
              "na2d cpp backend: grad of out must match v");
  at::Tensor rpbc = rpb.has_value() ? rpb->contiguous() : at::Tensor();
  at::Tensor ga;
  if (gattn.has_value() && gattn->defined() && gattn->numel() > 0) {
    TORCH_CHECK(gattn->dim() == 5 && gattn->size(4) == kh * kw,
                "na2d cpp backend: grad of attn must be [B, heads, H, W, kh*kw]");
    ga = gattn->to(q.scalar_type()).contiguous();
  }
  const int64_t tasks = q.size(0) * q.size(1) * dh * dw;
  const int nch = num_chunks(q.size(2), kh, dh);
  const int64_t nb = (2 * kh - 1) * (2 * kw - 1);
  const bool want_rpb = rpb_grad && rpb.has_value();
  at::Tensor part = want_rpb ? at::zeros({tasks * nch, nb}, q.options().dtype(at::kDouble))
                             : at::Tensor();
  const int64_t GwM = (q.size(3) + dw - 1) / dw;
  const int64_t nbnd = tasks * (nch - 1);
  at::Tensor dk_part = at::empty({nbnd * 2 * kh * GwM * k.size(4)}, q.options());
  at::Tensor dv_part = at::empty({nbnd * 2 * kh * GwM * v.size(4)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "na2d_cpp_backward", [&] {
    Problem<scalar_t> P = make_problem<scalar_t>(q, k, v, rpbc, kh, kw, dh, dw, scale);
    P.dout = dout.data_ptr<scalar_t>();
    P.sdo = strides_of(dout);
    P.gattn = ga.defined() ? ga.data_ptr<scalar_t>() : nullptr;
    P.dq = dq.data_ptr<scalar_t>();
    P.dk = dk.data_ptr<scalar_t>();
    P.dv = dv.data_ptr<scalar_t>();
    P.sdq = strides_of(dq);
    P.sdk = strides_of(dk);
    P.sdv = strides_of(dv);
    P.drpb_part = want_rpb ? part.data_ptr<double>() : nullptr;
    P.dk_part = dk_part.data_ptr<scalar_t>();
    P.dv_part = dv_part.data_ptr<scalar_t>();
    P.GwM = (int)GwM;
    at::parallel_for(0, tasks * nch, 1, [&](int64_t s, int64_t e) {
      for (int64_t t = s; t < e; ++t) backward_task<scalar_t>(P, t, nch);
    });
    if (nbnd > 0)
      at::parallel_for(0, nbnd, 1, [&](int64_t s, int64_t e) {
        for (int64_t bi = s; bi < e; ++bi) sum_boundary<scalar_t>(P, bi, nch);
      });
  });
  at::Tensor drpb;
  if (want_rpb) {
    // task t belongs to head (t / (dh*dw)) % heads
    drpb = part.view({q.size(0), q.size(1), dh * dw * nch, nb})
               .sum({0, 2})
               .view({q.size(1), 2 * kh - 1, 2 * kw - 1})
               .to(rpb->scalar_type());
  } else {
    drpb = at::empty({0}, q.options());
  }
  return drpb;
}

std::vector<at::Tensor> na2d_backward(const at::Tensor& dout, const c10::optional<at::Tensor>& gattn,
                                      const at::Tensor& q, const at::Tensor& k,
                                      const at::Tensor& v, const c10::optional<at::Tensor>& rpb,
                                      int64_t kh, int64_t kw, int64_t dh, int64_t dw,
                                      double scale, bool rpb_grad) {
  at::Tensor dq = like_canonical(q, q.size(4));
  at::Tensor dk = like_canonical(k, k.size(4));
  at::Tensor dv = like_canonical(v, v.size(4));
  at::Tensor drpb = na2d_backward_out(dq, dk, dv, dout, gattn, q, k, v, rpb, kh, kw, dh, dw,
                                      scale, rpb_grad);
  return {dq, dk, dv, drpb};
}

}  // namespace

