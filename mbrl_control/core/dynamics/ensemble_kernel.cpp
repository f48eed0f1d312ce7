// The learned ensemble's TS1/TS-infinity rollout as one fused AVX-512 loop (see ensemble_kernel.py).
//
// Why hand-written: per step, every member's MLP runs on its group of particles as a few small
// matmuls ([100, 64] x [64, 64]); a library call per matmul reaches the CPU's GEMM peak, but
// each one writes its output to memory for a separate bias + SiLU pass, the features and the
// state update are more passes, and bf16 needs conversions both ways. Here 16 particles at a
// time (one per SIMD lane) go through the whole network in registers and a few KiB of
// scratch: features, every layer with its activation, the mean head, the state update.
//
// Layout: particles in the lanes. A layer computes out[n][lane] = act(sum_k W[n][k] in[k][lane]
// + b[n]) by broadcasting weights against vectors of 16 particles, from transposed copies
// (W^T[k][n], packed by ensemble_kernel.py when the weights change) so that the weights one k
// needs are adjacent: one address register for all 24 accumulators (with torch's [n][k] rows,
// the 24 row pointers spill and the loop ran at 70 % of the FMA rate). With bf16 the hidden x
// hidden layers use AVX512-BF16 dot products: the input holds (k, k+1) pairs per lane, the
// weights (W[n][k], W[n][k+1]) pairs, packed [k/2][n][2], each pair one 32-bit broadcast.
//
// The caller (ensemble_kernel.py) checks shapes, dtypes and the CPU before calling.

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace {

constexpr int LANES = 16;
// The accumulators must stay in registers: without full unrolling gcc keeps them on the stack.
#define MBRL_UNROLL _Pragma("GCC unroll 32")
constexpr int MAX_BLOCK = 24;  // output rows per register block: 24 accumulators + operands fit 32 zmm

struct Net {
  int members, layers, hidden, in_dim, nx, nu;  // layers: hidden layers
  int out_dim;                // rows of the output layer: 2 nx (mean, log-variance), + 1 with a reward
  int n_plain, n_angle;
  const int32_t* plain_dims;  // [n_plain] state dims fed as they are
  const int32_t* angle_dims;  // [n_angle] state dims fed as (sin, cos)
  const float* input_mean;    // [in_dim]
  const float* input_std;     // [in_dim]
  const float* delta_mean;    // [nx]
  const float* delta_std;     // [nx]
  const float* const* weights;        // [layers + 1] of W^T [members][in][out] float32 (the head: its nx mean rows)
  const float* const* biases;         // [layers + 1] of [members][out] (torch's; the head's full out_dim)
  const uint16_t* const* weights_bf16;  // [layers] (index 0 unused) of [members][hidden/2][hidden][2] bf16 pairs
  int activation;  // 0 silu, 1 relu
};

// -- vector math ----------------------------------------------------------------------------

__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
  // Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n by scalef.
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f"))) inline __m512 activate(__m512 x, int activation) {
  if (activation == 1) return _mm512_max_ps(x, _mm512_setzero_ps());
  // silu(x) = x / (1 + exp(-x)); the reciprocal by rcp14 and one Newton step (a division costs
  // several times more here, and the step leaves float32 rounding: ~1e-7 relative).
  __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)));
  __m512 r = _mm512_rcp14_ps(d);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
  return _mm512_mul_ps(x, r);
}

// sin and cos of any angle (encoders wind): Cephes sinf/cosf on r = a - q pi/2, |r| <= pi/4.
__attribute__((target("avx512f"))) inline void sincos512(__m512 a, __m512* s_out, __m512* c_out) {
  __m512 q = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(0.63661977236758134f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(q, _mm512_set1_ps(1.5703125f), a);
  r = _mm512_fnmadd_ps(q, _mm512_set1_ps(4.837512969970703125e-4f), r);
  r = _mm512_fnmadd_ps(q, _mm512_set1_ps(7.54978995489188216e-8f), r);
  __m512 r2 = _mm512_mul_ps(r, r);
  __m512 s = _mm512_set1_ps(-1.9515295891e-4f);
  s = _mm512_fmadd_ps(s, r2, _mm512_set1_ps(8.3321608736e-3f));
  s = _mm512_fmadd_ps(s, r2, _mm512_set1_ps(-1.6666654611e-1f));
  s = _mm512_fmadd_ps(_mm512_mul_ps(s, r2), r, r);
  __m512 c = _mm512_set1_ps(2.443315711809948e-5f);
  c = _mm512_fmadd_ps(c, r2, _mm512_set1_ps(-1.388731625493765e-3f));
  c = _mm512_fmadd_ps(c, r2, _mm512_set1_ps(4.166664568298827e-2f));
  c = _mm512_fmadd_ps(_mm512_mul_ps(c, r2), r2, _mm512_fnmadd_ps(_mm512_set1_ps(0.5f), r2, _mm512_set1_ps(1.0f)));
  __m512i quadrant = _mm512_and_si512(_mm512_cvtps_epi32(q), _mm512_set1_epi32(3));
  __mmask16 swap = _mm512_test_epi32_mask(quadrant, _mm512_set1_epi32(1));         // q = 1, 3: sin <-> cos
  __m512 sin_a = _mm512_mask_blend_ps(swap, s, c);
  __m512 cos_a = _mm512_mask_blend_ps(swap, c, s);
  __mmask16 sin_neg = _mm512_test_epi32_mask(quadrant, _mm512_set1_epi32(2));      // q = 2, 3
  __mmask16 cos_neg = _mm512_cmpneq_epi32_mask(  // q = 1, 2
      _mm512_and_si512(_mm512_add_epi32(quadrant, _mm512_set1_epi32(1)), _mm512_set1_epi32(2)), _mm512_setzero_si512());
  const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
  *s_out = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(sin_a), sin_neg, _mm512_castps_si512(sin_a), sign));
  *c_out = _mm512_castsi512_ps(_mm512_mask_xor_epi32(_mm512_castps_si512(cos_a), cos_neg, _mm512_castps_si512(cos_a), sign));
}

// -- dense layers on 16 particles -------------------------------------------------------------

// out[n0 + j] = act(bias[n0 + j] + sum_k wt[k * N + n0 + j] * in[k]) for j < NB (float32).
template <int NB>
__attribute__((target("avx512f"))) inline void dense_f32(const float* wt, const float* bias, int K, int N, int n0,
                                                       const __m512* in, __m512* out, int activation, bool act) {
  __m512 acc[NB];
  MBRL_UNROLL for (int j = 0; j < NB; ++j) acc[j] = _mm512_set1_ps(bias[n0 + j]);
  const float* column = wt + n0;
  for (int k = 0; k < K; ++k, column += N) {
    __m512 a = in[k];
    MBRL_UNROLL for (int j = 0; j < NB; ++j) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(column[j]), a, acc[j]);
  }
  MBRL_UNROLL for (int j = 0; j < NB; ++j) out[n0 + j] = act ? activate(acc[j], activation) : acc[j];
}

// The same with bf16 inputs in (k, k+1) pairs per lane and bf16 weights; fp32 accumulation.
template <int NB>
__attribute__((target("avx512f,avx512bf16"))) inline void dense_bf16(const uint16_t* wp, const float* bias, int K, int N,
                                                                    int n0, const __m512i* in_pairs, __m512* out,
                                                                    int activation) {
  __m512 acc[NB];
  MBRL_UNROLL for (int j = 0; j < NB; ++j) acc[j] = _mm512_set1_ps(bias[n0 + j]);
  const uint16_t* pairs = wp + 2 * (size_t)n0;
  for (int kp = 0; kp < K / 2; ++kp, pairs += 2 * (size_t)N) {
    __m512bh a = (__m512bh)in_pairs[kp];
    MBRL_UNROLL for (int j = 0; j < NB; ++j) {
      int32_t pair;
      memcpy(&pair, pairs + 2 * j, sizeof(pair));
      acc[j] = _mm512_dpbf16_ps(acc[j], a, (__m512bh)_mm512_set1_epi32(pair));
    }
  }
  MBRL_UNROLL for (int j = 0; j < NB; ++j) out[n0 + j] = activate(acc[j], activation);
}

#define MBRL_BLOCKS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) \
  X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24)

__attribute__((target("avx512f"))) void dense_any_f32(const float* w, const float* bias, int K, int N,
                                                    const __m512* in, __m512* out, int activation, bool act) {
  for (int n0 = 0; n0 < N; n0 += MAX_BLOCK) {
    switch (N - n0 < MAX_BLOCK ? N - n0 : MAX_BLOCK) {
#define MBRL_CASE(nb) case nb: dense_f32<nb>(w, bias, K, N, n0, in, out, activation, act); break;
      MBRL_BLOCKS(MBRL_CASE)
#undef MBRL_CASE
    }
  }
}

__attribute__((target("avx512f,avx512bf16"))) void dense_any_bf16(const uint16_t* w, const float* bias, int K, int N,
                                                                 const __m512i* in_pairs, __m512* out, int activation) {
  for (int n0 = 0; n0 < N; n0 += MAX_BLOCK) {
    switch (N - n0 < MAX_BLOCK ? N - n0 : MAX_BLOCK) {
#define MBRL_CASE(nb) case nb: dense_bf16<nb>(w, bias, K, N, n0, in_pairs, out, activation); break;
      MBRL_BLOCKS(MBRL_CASE)
#undef MBRL_CASE
    }
  }
}

// (h[2p], h[2p + 1]) of each lane as bf16 pairs: the input of a bf16 layer (round to nearest even).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void to_pairs(const __m512* h, int n, __m512i* pairs) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                              23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int p = 0; p < n / 2; ++p) {
    __m512i halves = (__m512i)_mm512_cvtne2ps_pbh(h[2 * p + 1], h[2 * p]);  // [h[2p] lanes, h[2p+1] lanes]
    pairs[p] = _mm512_permutexvar_epi16(interleave, halves);
  }
}

// 16 row indices (int64) starting at rows[0] as int32 lanes.
__attribute__((target("avx512f"))) inline __m512i load_rows(const int64_t* rows) {
  __m256i lo = _mm512_cvtepi64_epi32(_mm512_loadu_si512(rows));
  __m256i hi = _mm512_cvtepi64_epi32(_mm512_loadu_si512(rows + 8));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

struct Scratch {
  __m512* features;
  __m512* h;        // [hidden] float32 activations
  __m512* h_next;   // [hidden]
  __m512i* pairs;   // [hidden / 2] bf16 pairs
};

// One step of one block of up to 16 particles (lanes where `valid`): particle p[lane] (its slot
// picks the member) is read from row p of `src` (row stride `src_row` floats), its action from
// u[p * u_row + j * u_elem], its new state written to row p of `dst`.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void block_step(
    const Net& net, int member, bool bf16, __m512i p, __mmask16 valid, const float* src, int src_row,
    const float* u, int u_row, int u_elem, float* dst, int dst_row, Scratch& s) {
  const int nx = net.nx, nu = net.nu, H = net.hidden;
  __m512 x[64];
  const __m512i src_base = _mm512_mullo_epi32(p, _mm512_set1_epi32(src_row));
  for (int d = 0; d < nx; ++d)
    x[d] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, _mm512_add_epi32(src_base, _mm512_set1_epi32(d)), src, 4);
  // Features as EnsembleDynamics.features: plain dims, sin of the angles, cos of the angles, actions; normalised.
  int f = 0;
  for (int i = 0; i < net.n_plain; ++i) s.features[f++] = x[net.plain_dims[i]];
  for (int i = 0; i < net.n_angle; ++i) sincos512(x[net.angle_dims[i]], &s.features[f + i], &s.features[f + net.n_angle + i]);
  f += 2 * net.n_angle;
  const __m512i u_base = _mm512_mullo_epi32(p, _mm512_set1_epi32(u_row));
  for (int j = 0; j < nu; ++j)
    s.features[f++] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid,
                                               _mm512_add_epi32(u_base, _mm512_set1_epi32(j * u_elem)), u, 4);
  for (int i = 0; i < net.in_dim; ++i)
    s.features[i] = _mm512_div_ps(_mm512_sub_ps(s.features[i], _mm512_set1_ps(net.input_mean[i])),
                                  _mm512_set1_ps(net.input_std[i]));
  // Hidden layers; the first always in float32 (its input is the features).
  const size_t first = (size_t)member * H * net.in_dim;
  dense_any_f32(net.weights[0] + first, net.biases[0] + (size_t)member * H, net.in_dim, H, s.features, s.h,
                net.activation, true);
  for (int l = 1; l < net.layers; ++l) {
    const size_t offset = (size_t)member * H * H;
    if (bf16) {
      to_pairs(s.h, H, s.pairs);
      dense_any_bf16(net.weights_bf16[l] + offset, net.biases[l] + (size_t)member * H, H, H, s.pairs, s.h_next, net.activation);
    } else {
      dense_any_f32(net.weights[l] + offset, net.biases[l] + (size_t)member * H, H, H, s.h, s.h_next, net.activation, true);
    }
    __m512* t = s.h; s.h = s.h_next; s.h_next = t;
  }
  // The mean head: the output layer's first nx rows (then nx log-variance rows, maybe a reward row).
  __m512 delta[64];
  dense_any_f32(net.weights[net.layers] + (size_t)member * H * nx, net.biases[net.layers] + (size_t)member * net.out_dim,
                H, nx, s.h, delta, net.activation, false);
  const __m512i dst_base = _mm512_mullo_epi32(p, _mm512_set1_epi32(dst_row));
  for (int d = 0; d < nx; ++d) {
    __m512 value = _mm512_add_ps(x[d], _mm512_fmadd_ps(delta[d], _mm512_set1_ps(net.delta_std[d]),
                                                       _mm512_set1_ps(net.delta_mean[d])));
    _mm512_mask_i32scatter_ps(dst, valid, _mm512_add_epi32(dst_base, _mm512_set1_epi32(d)), value, 4);
  }
}

// -- the rollout, on one or more threads ----------------------------------------------------

struct Job {
  const Net* net;
  bool bf16;
  int n, T, parties;
  const int64_t* from_slot;  // [T or 1][n]: the particle in slot s at step t (one row: TS-infinity)
  int slot_rows;
  const float* u;            // u[p * u_row + t * u_step + j * u_elem]: the caller's layout, not copied
  long u_row, u_step, u_elem;
  float* states;             // [n][T + 1][nx], particle order; row 0 holds the start states
};

// Step t's blocks of 16 slots, (member, block) units, cut into `parties` equal runs; party k runs
// its units of every step, meeting the others at a barrier after each step (step t + 1 reads
// what every party wrote at step t). Returns 0, or -1 without scratch memory.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) int run_party(const Job& job, int party,
                                                                    void (*barrier)(int)) {
  const Net& net = *job.net;
  const int E = net.members, G = job.n / E, H = net.hidden, nx = net.nx, row = (job.T + 1) * nx;
  const int blocks = (G + LANES - 1) / LANES, units = E * blocks;
  const int lo = (int)((long)units * party / job.parties), hi = (int)((long)units * (party + 1) / job.parties);
  Scratch s;
  void* memory = aligned_alloc(64, sizeof(__m512) * (size_t)(net.in_dim + 2 * H) + sizeof(__m512i) * (size_t)(H / 2 + 1));
  s.features = (__m512*)memory;
  s.h = s.features + net.in_dim;
  s.h_next = s.h + H;
  s.pairs = (__m512i*)(s.h_next + H);
  for (int t = 0; t < job.T; ++t) {
    const int64_t* particles = job.from_slot + (size_t)(job.slot_rows == 1 ? 0 : t) * job.n;
    for (int unit = lo; memory != nullptr && unit < hi; ++unit) {
      const int e = unit / blocks, b = (unit % blocks) * LANES;
      const int first = e * G + b;
      const int count = G - b < LANES ? G - b : LANES;
      const __mmask16 valid = (__mmask16)(count == LANES ? 0xFFFF : ((1u << count) - 1));
      __m512i p;
      if (count == LANES) {
        p = load_rows(particles + first);
      } else {
        int64_t tail[LANES] = {0};
        memcpy(tail, particles + first, sizeof(int64_t) * count);
        p = load_rows(tail);
      }
      block_step(net, e, job.bf16, p, valid, job.states + (size_t)t * nx, row, job.u + (size_t)t * job.u_step,
                 (int)job.u_row, (int)job.u_elem, job.states + (size_t)(t + 1) * nx, row, s);
    }
    if (job.parties > 1) barrier(job.parties);
  }
  free(memory);
  return memory == nullptr ? -1 : 0;
}

// Workers for the parties beyond the caller's, started on first use and kept (detached: they
// sleep on a condition variable between rollouts). Between steps the parties spin briefly at a
// barrier (a step takes tens of microseconds), then yield, so a barrier never holds a core long.
class Pool {
 public:
  int run(const Job& job) {
    std::lock_guard<std::mutex> one_rollout_at_a_time(run_mutex_);
    while ((int)started_ < job.parties - 1) {
      std::thread(&Pool::work, this, (int)++started_).detach();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = job;
      status_.store(0);
      finished_.store(0);
      ++generation_;
    }
    wake_.notify_all();
    int status = run_party(job, 0, &Pool::barrier);
    while (finished_.load(std::memory_order_acquire) < job.parties - 1) std::this_thread::yield();
    return status | status_.load();
  }

  static void barrier(int parties) {
    Pool& pool = instance();
    const unsigned long phase = pool.phase_.load(std::memory_order_acquire);
    if (pool.arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == parties) {
      pool.arrived_.store(0, std::memory_order_relaxed);
      pool.phase_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; pool.phase_.load(std::memory_order_acquire) == phase; ++spins) {
      if (spins < 4000) {
        _mm_pause();
      } else {
        std::this_thread::yield();
      }
    }
  }

  static Pool& instance() {
    static Pool* pool = new Pool();  // never destroyed: its detached workers outlive static destruction
    return *pool;
  }

 private:
  void work(int party) {
    unsigned long seen = 0;
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        job = job_;
      }
      if (party < job.parties) {
        status_.fetch_or(run_party(job, party, &Pool::barrier));
        finished_.fetch_add(1, std::memory_order_release);
      }
    }
  }

  std::mutex run_mutex_, mutex_;
  std::condition_variable wake_;
  Job job_{};
  unsigned long generation_ = 0;
  unsigned started_ = 0;
  std::atomic<int> status_{0}, finished_{0}, arrived_{0};
  std::atomic<unsigned long> phase_{0};
};

}  // namespace

extern "C" {

// 1 if this CPU runs the float32 kernel (AVX-512F), 3 if also the bf16 one (AVX512-BF16, BW).
int mbrl_kernel_support(void) {
  __builtin_cpu_init();
  int support = __builtin_cpu_supports("avx512f") ? 1 : 0;
  if (support && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16")) support |= 2;
  return support;
}

// states: [n][T + 1][nx] in particle order, row 0 of each particle its start state (the caller's);
// rows 1..T are written. from_slot: [T][n] (TS1) or [1][n] (TS-infinity), the particle in slot s
// at step t; slot s is moved by member s / (n / members). Actions: u[p * u_row + t * u_step +
// j * u_elem] (any layout the caller keeps, e.g. the planners' time-major buffer). threads: the
// calling thread and threads - 1 workers. Returns 0, or -1 without scratch memory.
int mbrl_ensemble_rollout(const Net* net, int bf16, int n, int T, const int64_t* from_slot, int slot_rows,
                          const float* u, long u_row, long u_step, long u_elem, float* states, int threads) {
  const int units = net->members * ((n / net->members + LANES - 1) / LANES);
  Job job{net, bf16 != 0, n, T, threads < 1 ? 1 : (threads > units ? units : threads), from_slot, slot_rows,
          u, u_row, u_step, u_elem, states};
  if (job.parties == 1) return run_party(job, 0, nullptr);
  return Pool::instance().run(job);
}

}  // extern "C"
