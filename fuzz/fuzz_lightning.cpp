// libFuzzer harness over the public entry points: the first byte picks one, the rest drive its arguments.
//
// Shapes (zero, and huge extents whose products overflow int64), strides (negative, zero,
// overlapping), slopes (NaN, inf, negative, denormal, up to 1e30), scales, block sizes, thread
// counts, paths, null data, aliasing, mismatched views and decode slots all come from the input.
// Calls that are certainly invalid must throw lightning::invalid_argument; every call that throws
// must leave every buffer as it was; every call that returns must match the double reference
// (elementwise, relative to the reference on absolute values) and write only inside its outputs.
// AddressSanitizer catches any access outside the views. Adding an entry point is one function
// appended to kEntryPoints.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <set>
#include <type_traits>
#include <vector>

#include "lightning/lightning.hpp"
#include "lightning/reference/backward.hpp"
#include "lightning/reference/reference.hpp"

namespace {

using lightning::Options;
using lightning::Path;
using lightning::View;

[[noreturn]] void bug(const char* what) {
  std::fprintf(stderr, "lightning fuzz: %s\n", what);
  std::abort();
}

/** Reads the fuzz input; past its end every read is 0. */
struct Bytes {
  const uint8_t* p;
  size_t n;
  uint8_t u8() { return n ? (--n, *p++) : 0; }
  uint64_t u64() {
    uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x = x << 8 | u8();
    return x;
  }
  template <class T, size_t N>
  T pick(const T (&values)[N]) { return values[u8() % N]; }
  /** Mostly [0, small]; 1 in 16 a hostile value. */
  int64_t extent(int64_t small) {
    static const int64_t hostile[] = {0, -1, -3, int64_t{1} << 31, int64_t{1} << 32, int64_t{1} << 62,
                                      std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
                                      3037000500, 5000};
    const uint8_t b = u8();
    return b >= 240 ? hostile[b % std::size(hostile)] : b % (small + 1);
  }
};

constexpr int64_t kMaxElements = int64_t{1} << 16;  // per buffer, for calls that are not certainly invalid
using i128 = __int128;

/** a * b, saturated to int64's range (hostile extents would overflow). */
int64_t mul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (!__builtin_mul_overflow(a, b, &r)) return r;
  return (a < 0) == (b < 0) ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
}

/** A view over its own heap buffer, exactly as large as the span the view addresses. */
struct Tensor {
  View<float> view;
  std::vector<float> buf;  // the span [lo, hi] in elements, origin at -lo
  i128 lo = 0, hi = -1;    // hi < lo: the view addresses nothing
  bool huge = false;       // the span is too large to allocate: data points at a 1-element dummy

  bool empty() const { return view.batch <= 0 || view.heads <= 0 || view.seq <= 0 || view.dim <= 0; }
  /**
   * True when the library must reject the view on its own: negative extent or a span int64 bytes
   * cannot count, for elements of `bytes` bytes (the library's operand: 2 for bf16 and fp16).
   */
  bool certainly_invalid(int64_t bytes = sizeof(float)) const {
    if (view.batch < 0 || view.heads < 0 || view.seq < 0 || view.dim < 0) return true;
    if (empty()) return false;
    if (view.data == nullptr) return true;
    const i128 max = std::numeric_limits<int64_t>::max(), min = std::numeric_limits<int64_t>::min();
    return lo < min / bytes || hi + 1 > max / bytes;
  }
};

/** Fills a tensor's strides from the input: [B,H,N,D], [B,N,H,D], or free (negative, zero, overlapping, huge). */
Tensor make(Bytes& in, int64_t b, int64_t h, int64_t n, int64_t d, std::mt19937& rng, const std::vector<float>& specials) {
  Tensor t;
  int64_t sb = mul(h, mul(n, d)), sh = mul(n, d), sn = d;
  switch (in.u8() % 4) {
    case 1: sb = mul(n, mul(h, d)), sh = d, sn = mul(h, d); break;
    case 2: {
      static const int64_t hostile[] = {0, -1, 1, int64_t{1} << 40, -(int64_t{1} << 61), std::numeric_limits<int64_t>::max()};
      int64_t* s[3] = {&sb, &sh, &sn};
      for (int64_t* x : s) {
        const uint8_t c = in.u8();
        *x = c >= 248 ? hostile[c % std::size(hostile)] : static_cast<int8_t>(in.u8()) * static_cast<int64_t>(1 + c % 8);
      }
      break;
    }
    default: break;
  }
  t.view = View<float>(nullptr, b, h, n, d, sb, sh, sn);
  if (!t.empty() && b >= 0 && h >= 0 && n >= 0 && d >= 0) {
    const i128 ext[3] = {b, h, n}, str[3] = {sb, sh, sn};
    t.lo = 0, t.hi = d - 1;
    for (int i = 0; i < 3; ++i) {
      const i128 cap = i128{1} << 100, reach = std::clamp<i128>((ext[i] - 1) * str[i], -cap, cap);
      (reach < 0 ? t.lo : t.hi) += reach;
    }
  }
  const i128 count = t.hi - t.lo + 1;
  static float dummy[1];
  if (count > kMaxElements) {
    t.huge = true;
    t.view.data = dummy;
  } else if (count > 0) {
    t.buf.resize(static_cast<size_t>(count));
    std::normal_distribution<float> normal(0.0f, 0.7f);
    for (float& x : t.buf) x = normal(rng);
    // A few special values (NaN, inf, 1e15, denormal, 0) at input-chosen places.
    for (int i = in.u8() % 4; i > 0 && !specials.empty(); --i)
      t.buf[in.u8() * 257u % t.buf.size()] = specials[in.u8() % specials.size()];
    t.view.data = t.buf.data() + static_cast<int64_t>(-t.lo);
  }
  if (in.u8() == 255) t.view.data = nullptr;  // null data
  return t;
}

/** The same view over a copy of the buffer (the state before the call), optionally with |x|. */
View<const float> copy_of(const Tensor& t, std::vector<float>& storage, bool absolute) {
  storage = t.buf;
  if (absolute)
    for (float& x : storage) x = std::abs(x);
  View<const float> v = t.view;
  if (!t.buf.empty()) v.data = storage.data() + static_cast<int64_t>(-t.lo);
  return v;
}

/** The element offsets (from the buffer start) a view addresses. */
std::vector<size_t> addressed(const Tensor& t) {
  std::vector<size_t> at;
  if (t.empty() || t.buf.empty()) return at;
  const auto& v = t.view;
  for (int64_t b = 0; b < v.batch; ++b)
    for (int64_t h = 0; h < v.heads; ++h)
      for (int64_t s = 0; s < v.seq; ++s)
        for (int64_t d = 0; d < v.dim; ++d)
          at.push_back(static_cast<size_t>(v.row(b, h, s) + d - t.buf.data()));
  return at;
}

template <class E>
bool same_bits(const std::vector<E>& a, const std::vector<E>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(E)) == 0);
}

/** A buffer's bytes (a tensor's, or any vector's): what the checks that nothing else was written compare. */
struct Raw {
  const unsigned char* p = nullptr;
  size_t n = 0;
  template <class E>
  Raw(const std::vector<E>& v) : p(reinterpret_cast<const unsigned char*>(v.data())), n(v.size() * sizeof(E)) {}  // NOLINT
  Raw(const Tensor& t) : Raw(t.buf) {}  // NOLINT
  std::vector<unsigned char> copy() const { return std::vector<unsigned char>(p, p + n); }
  bool same(const std::vector<unsigned char>& b) const { return b.size() == n && (n == 0 || std::memcmp(p, b.data(), n) == 0); }
};

double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float e : x)
    if (std::isfinite(e)) m = std::max(m, static_cast<double>(std::abs(e)));
  return m;
}

/**
 * What the library may drop by design (README, "Strong decay"): terms whose decay weight lambda^t is
 * below e^-44, and in the outputs also those whose scaled weight c lambda^t is below the smallest
 * normal float (the binding floor only for |c| < FLT_MIN e^44, about 1.5e-19). Bounded with the
 * largest entries, for the state and for the outputs; negligible unless the data spans some twelve
 * orders of magnitude or the scale is that small.
 */
struct Flushed {
  double state, out;
  Flushed(double scale, int64_t dk, int64_t n, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& s) {
    const double w = std::exp(-44.0), reach = max_abs(k.buf) * max_abs(v.buf) * static_cast<double>(n) + max_abs(s.buf);
    state = w * reach;
    out = (std::abs(scale) * w + FLT_MIN) * max_abs(q.buf) * static_cast<double>(dk) * reach;
  }
};

/** What storing an output in a 16-bit type adds: relative rounding u, an absolute floor, the largest finite value. */
struct Rounding {
  double u = 0, tiny = 1e-30, max_finite = std::numeric_limits<double>::infinity();
};
template <class E>
Rounding rounding_of() {
  if constexpr (std::is_same_v<E, lightning::bf16>) return {0x1p-8, 1e-30, std::numeric_limits<double>::infinity()};
  if constexpr (std::is_same_v<E, lightning::fp16>) return {0x1p-11, 0x1p-24, 65504.0};
  return {};
}

/** x against the reference value and the reference on absolute values: close, or non-finite exactly when it is. */
void check_value(float x, double ref, double ref_abs, double flushed, const Rounding& r = {}) {
  if (!std::isfinite(ref)) {
    if (std::isfinite(x)) bug("finite output where the reference is not (NaN/Inf policy)");
    return;
  }
  if (ref_abs > 1e20) return;  // intermediates of the tiled form may leave fp32 (documented limit)
  const double tol = (2e-4 + r.u) * ref_abs + flushed * (1 + r.u) + r.tiny;
  if (std::abs(ref) + tol >= r.max_finite) return;  // may round to infinity in the 16-bit output
  if (!std::isfinite(x)) bug("non-finite output where the reference is finite");
  if (std::abs(x - ref) > tol) bug("output differs from the reference");
}

struct Call {
  Options opt;
  std::vector<float> slopes;
  const char* invalid = nullptr;  // why the call is certainly invalid (must throw), or null
  void reject_if(bool condition, const char* why) {
    if (condition && !invalid) invalid = why;
  }
};

/** Options from the input; marks the call invalid for values the README says are rejected. */
void read_options(Bytes& in, Call& c, int64_t kv_heads) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  static const float slope_values[] = {0.0f, 1e-6f, 0.05f, 0.3f, 1.0f, 8.0f, 30.0f, 44.0f, 87.3f, 88.0f, 1e30f, 1e-40f, -0.0f,
                                       nan, -1.0f, inf};
  static const float scales[] = {1.0f, 0.125f, -2.0f, 1e-30f, 0.0f, 1e-3f, nan, inf};
  static const int64_t blocks[] = {0, 1, 2, 5, 16, 63, 64, 65, 100, 4096, 4097, -1, std::numeric_limits<int64_t>::max()};
  static const int threads[] = {1, 2, 0, 3, -1, std::numeric_limits<int>::min()};
  if (in.u8() % 4 != 0 && kv_heads > 0 && kv_heads <= 64) {
    for (int64_t h = 0; h < kv_heads; ++h) c.slopes.push_back(in.pick(slope_values));
    c.opt.slopes = c.slopes.data();
    for (float s : c.slopes) c.reject_if(!(s >= 0.0f) || std::isinf(s), "slope");
  }
  c.opt.scale = in.pick(scales);
  c.opt.block_size = in.pick(blocks);
  c.opt.threads = in.pick(threads);
  c.opt.path = static_cast<Path>(in.u8() % 5);
  c.reject_if(!std::isfinite(c.opt.scale), "scale");
  c.reject_if(c.opt.block_size < 0 || c.opt.block_size > 4096, "block_size");
  c.reject_if(c.opt.threads < 0, "threads");
  c.reject_if(!lightning::path_compiled(c.opt.path), "path");
}

/** Sets one extent of one tensor to another value: the views then disagree, so the call is invalid. */
void maybe_mismatch(Bytes& in, std::vector<Tensor*> ts, Call& c) {
  if (in.u8() % 8 != 0) return;
  Tensor& t = *ts[in.u8() % ts.size()];
  int64_t* e[4] = {&t.view.batch, &t.view.heads, &t.view.seq, &t.view.dim};
  int64_t& x = *e[in.u8() % 4];
  const int64_t old = x;
  x = in.extent(6);
  c.reject_if(x != old, "mismatched extent");
  t.huge |= x > old;  // the buffer no longer covers the view: the call must not happen unless it throws
}

/**
 * Runs `call`; if it throws, `invalid_argument` only and nothing written. Returns whether it ran
 * normally. A certainly invalid call that returns is a bug.
 */
template <class F>
bool run(F&& call, const Call& c, const std::vector<Raw>& all) {
  std::vector<std::vector<unsigned char>> before;
  for (const Raw& t : all) before.push_back(t.copy());
  try {
    call();
  } catch (const lightning::invalid_argument&) {
    for (size_t i = 0; i < all.size(); ++i)
      if (!all[i].same(before[i])) bug("a rejected call wrote to a buffer");
    return false;
  }
  if (c.invalid) {
    std::fprintf(stderr, "lightning fuzz: certainly invalid: %s\n", c.invalid);
    bug("an invalid call was accepted");
  }
  return true;
}

/** Whether anything changed in `out` (laid out as `layout`) other than the elements its view addresses. */
template <class E>
void check_written_inside(const Tensor& layout, const std::vector<E>& out, const std::vector<E>& before_out) {
  std::vector<E> masked = out, masked_before = before_out;
  for (size_t at : addressed(layout)) masked[at] = masked_before[at] = E();
  if (!same_bits(masked, masked_before)) bug("an output was written outside its view");
}

/** Whether anything other than `outputs`' addressed elements changed. */
void check_only_outputs_written(const std::vector<const Tensor*>& inputs, const std::vector<std::vector<float>>& before_in,
                                const Tensor& out, const std::vector<float>& before_out) {
  for (size_t i = 0; i < inputs.size(); ++i)
    if (!same_bits(inputs[i]->buf, before_in[i])) bug("an input was written");
  check_written_inside(out, out.buf, before_out);
}

/**
 * The operand the library gets for a tensor in storage type E: t's buffer rounded to E in place
 * (so the reference runs on the same rounded inputs) and an E copy under the same view. For
 * float, an exact copy.
 */
template <class E>
struct Stored {
  std::vector<E> buf;
  View<E> view;
  explicit Stored(Tensor& t) : buf(t.buf.size()) {
    for (size_t i = 0; i < buf.size(); ++i) {
      buf[i] = E(t.buf[i]);
      t.buf[i] = static_cast<float>(buf[i]);
    }
    static E dummy[1];
    const auto& v = t.view;
    E* data = v.data == nullptr ? nullptr : t.buf.empty() ? dummy : buf.data() + (v.data - t.buf.data());
    view = View<E>(data, v.batch, v.heads, v.seq, v.dim, v.batch_stride, v.head_stride, v.seq_stride);
  }
  float at(int64_t b, int64_t h, int64_t t, int64_t i) const { return static_cast<float>(view.row(b, h, t)[i]); }
};

std::vector<float> specials_from(Bytes& in) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  static const float values[] = {nan, inf, -inf, 1e15f, -1e15f, 1e-40f, 0.0f, -0.0f};
  std::vector<float> s;
  for (int i = in.u8() % 3; i > 0; --i) s.push_back(in.pick(values));
  return s;
}

bool too_much_work(int64_t B, int64_t H, int64_t n, int64_t dk, int64_t dv) {
  return i128{B} * H > 64 || n > 600 || dk > 128 || dv > 128 || i128{B} * H * (n * n + n) * (dk + dv) > 2'000'000;
}

/** The forward with q, k, v and o stored as E (float, bf16 or fp16); states are fp32. */
template <class E>
void forward_as(Bytes& in) {
  std::mt19937 rng(static_cast<uint32_t>(in.u64()));
  const auto specials = specials_from(in);
  const int64_t B = in.extent(3), G = in.extent(3), n = in.extent(300), dk = in.extent(40), dv = in.extent(40);
  const int64_t group = in.u8() % 8 == 0 ? in.extent(3) : 1 + in.u8() % 3;
  const int64_t H = mul(G, group);
  Call c;
  Tensor q = make(in, B, H, n, dk, rng, specials), k = make(in, B, G, n, dk, rng, specials),
         v = make(in, B, G, n, dv, rng, specials), o = make(in, B, H, n, dv, rng, {});
  const uint8_t states = in.u8() % 4;  // 0 none, 1 in, 2 out, 3 in and out (the same view if a bit says so)
  const bool in_place = states == 3 && in.u8() % 2 == 0;  // state_out is then state_in's very view
  Tensor s_in = states & 1 ? make(in, B, G, dk, dv, rng, specials) : Tensor{};
  Tensor s_out = states & 2 && !in_place ? make(in, B, G, dk, dv, rng, {}) : Tensor{};
  read_options(in, c, G);
  maybe_mismatch(in, {&q, &k, &v, &o, states & 1 ? &s_in : &q, states & 2 && !in_place ? &s_out : &o}, c);

  bool huge = false;
  for (const Tensor* t : {&q, &k, &v, &o}) c.reject_if(t->certainly_invalid(sizeof(E)), "view"), huge |= t->huge;
  for (const Tensor* t : {&s_in, &s_out}) c.reject_if(t->certainly_invalid(), "view"), huge |= t->huge;
  c.reject_if(dk < 1 || dv < 1, "dims");
  c.reject_if(G < 1 || (H >= 0 && H % G != 0), "heads");
  if (!c.invalid && (huge || too_much_work(B, H, n, dk, dv))) return;  // cannot be run safely, and may be valid

  // The library's operands in E; q, k, v keep the rounded values for the reference.
  const Stored<E> q_e(q), k_e(k), v_e(v);
  Stored<E> o_e(o);
  View<const float> sin_view = s_in.view;
  View<float> sout_view = s_out.view;
  if (in_place) sout_view = View<float>(const_cast<float*>(sin_view.data), sin_view.batch, sin_view.heads, sin_view.seq,
                                        sin_view.dim, sin_view.batch_stride, sin_view.head_stride, sin_view.seq_stride);
  // Everything the checks read from the inputs is taken now: an in-place state_out overwrites state_in.
  std::vector<float> qs, ks, vs, ss, qa, ka, va, sa;
  const auto q0 = copy_of(q, qs, false), k0 = copy_of(k, ks, false), v0 = copy_of(v, vs, false),
             s0 = copy_of(s_in, ss, false);
  const auto qa0 = copy_of(q, qa, true), ka0 = copy_of(k, ka, true), va0 = copy_of(v, va, true), sa0 = copy_of(s_in, sa, true);
  const Flushed flushed(c.opt.scale, dk, n, q, k, v, s_in);
  const std::vector<std::vector<E>> before_in = {q_e.buf, k_e.buf, v_e.buf};
  const std::vector<E> before_o = o_e.buf;
  const std::vector<float> before_s = s_out.buf;
  const bool ran = run([&] { lightning::forward<E>(q_e.view, k_e.view, v_e.view, o_e.view, c.opt, sin_view, sout_view); },
                       c, {q_e.buf, k_e.buf, v_e.buf, o_e.buf, s_in, s_out});
  if (!ran || H == 0 || B == 0) return;

  if (!same_bits(q_e.buf, before_in[0]) || !same_bits(k_e.buf, before_in[1]) || !same_bits(v_e.buf, before_in[2]))
    bug("an input was written");
  check_written_inside(o, o_e.buf, before_o);
  if (!in_place && states & 2) check_only_outputs_written({&s_in}, {ss}, s_out, before_s);
  const auto ref = lightning::reference::quadratic(q0, k0, v0, c.opt.slopes, c.opt.scale, s0);
  const auto ref_abs = lightning::reference::quadratic(qa0, ka0, va0, c.opt.slopes, std::abs(c.opt.scale), sa0);
  // With more than one thread a sequence may be cut into pieces (README "Threads"): a later piece's
  // 16-bit rows are rounded once from a zero state and again after the read-out correction, so they
  // are within 2u, not u, of the reference (fuzz/corpus/regress-forward-bf16-split-rounded-twice).
  Rounding o_rounding = rounding_of<E>();
  if (c.opt.threads != 1) o_rounding.u *= 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < dv; ++j) {
          const size_t at = static_cast<size_t>(((b * H + h) * n + t) * dv + j);
          check_value(o_e.at(b, h, t, j), ref.o[at], ref_abs.o[at], flushed.out, o_rounding);
        }
  if (states & 2)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < dk; ++i)
          for (int64_t j = 0; j < dv; ++j) {
            const size_t at = static_cast<size_t>(((b * G + g) * dk + i) * dv + j);
            check_value(sout_view.row(b, g, i)[j], ref.state[at], ref_abs.state[at], flushed.state);
          }
}

void fuzz_forward(Bytes& in) { forward_as<float>(in); }
void fuzz_forward_bf16(Bytes& in) { forward_as<lightning::bf16>(in); }
void fuzz_forward_fp16(Bytes& in) { forward_as<lightning::fp16>(in); }

void fuzz_decode(Bytes& in) {
  std::mt19937 rng(static_cast<uint32_t>(in.u64()));
  const auto specials = specials_from(in);
  const int64_t B = in.extent(6), G = in.extent(3), dk = in.extent(40), dv = in.extent(40);
  const int64_t H = mul(G, 1 + in.u8() % 3);
  const int64_t n = in.u8() % 16 == 0 ? in.extent(3) : 1;
  const bool use_slots = in.u8() % 2;
  const int64_t cache = use_slots ? in.extent(8) : B;
  Call c;
  Tensor q = make(in, B, H, n, dk, rng, specials), k = make(in, B, G, n, dk, rng, specials),
         v = make(in, B, G, n, dv, rng, specials), o = make(in, B, H, n, dv, rng, {});
  Tensor st = make(in, cache, G, dk, dv, rng, specials);
  std::vector<int64_t> slots;
  if (use_slots && B >= 0 && B <= 64) {
    std::set<int64_t> used;
    for (int64_t b = 0; b < B; ++b) {
      const uint8_t x = in.u8();
      const int64_t s = x >= 250 ? std::numeric_limits<int64_t>::min() : static_cast<int64_t>(x % 12) - 2;
      slots.push_back(s);
      c.reject_if(s >= cache, "slot out of range");
      c.reject_if(s >= 0 && !used.insert(s).second, "shared slot");
    }
  } else if (use_slots) {
    return;  // a batch too large for a slot list: nothing to read the slots from
  }
  read_options(in, c, G);
  maybe_mismatch(in, {&q, &k, &v, &o, use_slots ? &q : &st}, c);  // with slots, any cache size matches
  bool huge = false;
  for (const Tensor* t : {&q, &k, &v, &o, &st}) c.reject_if(t->certainly_invalid(), "view"), huge |= t->huge;
  c.reject_if(dk < 1 || dv < 1, "dims");
  c.reject_if(G < 1, "heads");
  c.reject_if(q.view.seq != 1, "decode seq");
  if (!c.invalid && (huge || too_much_work(B, H, 1, dk, dv))) return;

  std::vector<float> qs, ks, vs, ss, qa, ka, va, sa;
  const auto q0 = copy_of(q, qs, false), k0 = copy_of(k, ks, false), v0 = copy_of(v, vs, false), s0 = copy_of(st, ss, false);
  const auto qa0 = copy_of(q, qa, true), ka0 = copy_of(k, ka, true), va0 = copy_of(v, va, true), sa0 = copy_of(st, sa, true);
  const Flushed flushed(c.opt.scale, dk, 1, q, k, v, st);  // before the call, which updates the states in place
  const std::vector<std::vector<float>> before_in = {q.buf, k.buf, v.buf};
  const std::vector<float> before_o = o.buf, before_s = st.buf;
  const bool ran = run([&] { lightning::decode<float>(q.view, k.view, v.view, o.view, st.view, c.opt,
                                               use_slots ? slots.data() : nullptr); },
                       c, {q, k, v, o, st});
  if (!ran) return;
  check_only_outputs_written({&q, &k, &v}, before_in, o, before_o);
  // Sequence by sequence: the one-token recurrence from the slot's state; padding is neither read nor written.
  const auto one = [](View<const float> x, int64_t b) { return View<const float>(x.row(b, 0, 0), 1, x.heads, 1, x.dim, 0, x.head_stride, x.seq_stride); };
  for (int64_t b = 0; b < B; ++b) {
    const int64_t slot = use_slots ? slots[static_cast<size_t>(b)] : b;
    if (slot < 0) {
      for (int64_t h = 0; h < H; ++h)
        if (std::memcmp(o.view.row(b, h, 0), before_o.data() + (o.view.row(b, h, 0) - o.buf.data()), sizeof(float) * dv))
          bug("decode wrote the output of a padded sequence");
      continue;
    }
    const auto ref = lightning::reference::recurrence(one(q0, b), one(k0, b), one(v0, b), c.opt.slopes, c.opt.scale, one(s0, slot));
    const auto ref_abs = lightning::reference::recurrence(one(qa0, b), one(ka0, b), one(va0, b), c.opt.slopes,
                                                          std::abs(c.opt.scale), one(sa0, slot));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < dv; ++j)
        check_value(o.view.row(b, h, 0)[j], ref.o[static_cast<size_t>(h * dv + j)], ref_abs.o[static_cast<size_t>(h * dv + j)],
                    flushed.out);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          const size_t at = static_cast<size_t>((g * dk + i) * dv + j);
          check_value(st.view.row(slot, g, i)[j], ref.state[at], ref_abs.state[at], flushed.state);
        }
  }
  // Cache slots no sequence uses keep their bits.
  std::set<int64_t> touched;
  for (int64_t b = 0; b < B; ++b) touched.insert(use_slots ? slots[static_cast<size_t>(b)] : b);
  for (int64_t s = 0; s < cache; ++s)
    if (!touched.count(s))
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < dk; ++i)
          if (std::memcmp(st.view.row(s, g, i), before_s.data() + (st.view.row(s, g, i) - st.buf.data()), sizeof(float) * dv))
            bug("decode wrote an unused cache slot");
}

template <class E>
void backward_as(Bytes& in) {
  std::mt19937 rng(static_cast<uint32_t>(in.u64()));
  const auto specials = specials_from(in);
  const int64_t B = in.extent(2), G = in.extent(2), n = in.extent(150), dk = in.extent(20), dv = in.extent(20);
  const int64_t group = in.u8() % 8 == 0 ? in.extent(3) : 1 + in.u8() % 3;
  const int64_t H = mul(G, group);
  Call c;
  Tensor q = make(in, B, H, n, dk, rng, specials), k = make(in, B, G, n, dk, rng, specials),
         v = make(in, B, G, n, dv, rng, specials), d_o = make(in, B, H, n, dv, rng, specials);
  // Which optional views are given: dq, dk, dv (bits 0-2 clear), state_in, d_state_out, d_state_in (bits 0-2 set);
  // d_state_in may be d_state_out's very view (the gradient carried back in place).
  const uint8_t outs = in.u8(), states = in.u8();
  Tensor dq = outs & 1 ? Tensor{} : make(in, B, H, n, dk, rng, {});
  Tensor dkk = outs & 2 ? Tensor{} : make(in, B, G, n, dk, rng, {});
  Tensor dvv = outs & 4 ? Tensor{} : make(in, B, G, n, dv, rng, {});
  const bool carried = (states & 6) == 6 && states & 8;
  Tensor s_in = states & 1 ? make(in, B, G, dk, dv, rng, specials) : Tensor{};
  Tensor ds_out = states & 2 ? make(in, B, G, dk, dv, rng, specials) : Tensor{};
  Tensor ds_in = states & 4 && !carried ? make(in, B, G, dk, dv, rng, {}) : Tensor{};
  read_options(in, c, G);
  // d_slopes: none, G floats of its own between two guards, or (rejected) overlapping the slopes or q.
  const uint8_t slope_grad = in.u8() % 6;
  std::vector<float> d_slopes_buf;
  float* d_slopes = nullptr;
  bool d_slopes_on_q = false;
  if (slope_grad >= 2 && G >= 1 && G <= 64) {
    d_slopes_buf.assign(static_cast<size_t>(G + 2), 7.0f);
    d_slopes = d_slopes_buf.data() + 1;
    if (slope_grad == 4 && c.opt.slopes) {
      d_slopes = const_cast<float*>(c.opt.slopes);
      c.reject_if(true, "d_slopes overlaps options.slopes");
    } else if (slope_grad == 5 && !q.empty() && !q.buf.empty() && q.view.data) {
      d_slopes_on_q = true;  // pointed at the q the library gets once it exists (below)
      c.reject_if(true, "d_slopes overlaps q");
    }
  }
  std::vector<Tensor*> knock = {&q, &k, &v, &d_o};
  for (Tensor* t : {&dq, &dkk, &dvv, &s_in, &ds_out, &ds_in})
    if (!t->view.absent()) knock.push_back(t);
  maybe_mismatch(in, knock, c);

  bool huge = false;
  // Spans counted in the operand's bytes: a 16-bit view may span twice the elements of an fp32 one.
  for (const Tensor* t : {&q, &k, &v, &d_o, &dq, &dkk, &dvv})
    c.reject_if(t->certainly_invalid(sizeof(E)), "view"), huge |= t->huge;
  for (const Tensor* t : {&s_in, &ds_out, &ds_in}) c.reject_if(t->certainly_invalid(), "view"), huge |= t->huge;
  c.reject_if(dk < 1 || dv < 1, "dims");
  c.reject_if(G < 1 || (H >= 0 && H % G != 0), "heads");
  if (!c.invalid && (huge || too_much_work(B, H, n, dk, dv))) return;

  // The library's operands and gradients in E; q, k, v and d_o keep the rounded values for the reference.
  const Stored<E> q_e(q), k_e(k), v_e(v), do_e(d_o);
  Stored<E> dq_e(dq), dk_e(dkk), dv_e(dvv);
  if (d_slopes_on_q) d_slopes = reinterpret_cast<float*>(const_cast<E*>(q_e.view.data));
  View<float> dsin_view = ds_in.view;
  if (carried) dsin_view = ds_out.view;
  // Everything the checks read from the inputs is taken now: a carried d_state_in overwrites d_state_out.
  std::vector<float> qs, ks, vs, ds, ss, os, qa, ka, va, da, sa, oa;
  const auto q0 = copy_of(q, qs, false), k0 = copy_of(k, ks, false), v0 = copy_of(v, vs, false),
             do0 = copy_of(d_o, ds, false), s0 = copy_of(s_in, ss, false), dso0 = copy_of(ds_out, os, false);
  const auto qa0 = copy_of(q, qa, true), ka0 = copy_of(k, ka, true), va0 = copy_of(v, va, true),
             doa0 = copy_of(d_o, da, true), sa0 = copy_of(s_in, sa, true), dsoa0 = copy_of(ds_out, oa, true);
  // Decay powers (and scale times them, and p times them) below the smallest normal float are taken as 0:
  // each dropped term is below FLT_MIN times a product of at most three inputs, summed over pairs and dims.
  double m = 1;
  for (const Tensor* t : {&q, &k, &v, &d_o, &s_in, &ds_out}) m = std::max(m, max_abs(t->buf));
  const double n1 = static_cast<double>(n) + 1, flushed = FLT_MIN * (1 + std::abs(c.opt.scale)) * m * m * m * n1 * n1 * n1 *
                                                         (static_cast<double>(dk) + 1) * (static_cast<double>(dv) + 1);
  const std::vector<std::vector<E>> before_in = {q_e.buf, k_e.buf, v_e.buf, do_e.buf};
  const std::vector<E> before_dq = dq_e.buf, before_dk = dk_e.buf, before_dv = dv_e.buf;
  const std::vector<float> before_dsin = ds_in.buf, before_dsout = ds_out.buf;
  const bool ran = run(
      [&] {
        lightning::backward<E>(q_e.view, k_e.view, v_e.view, do_e.view, dq_e.view, dk_e.view, dv_e.view, c.opt,
                               s_in.view, ds_out.view, dsin_view, d_slopes);
      },
      c, {q_e.buf, k_e.buf, v_e.buf, do_e.buf, dq_e.buf, dk_e.buf, dv_e.buf, s_in, ds_out, ds_in, d_slopes_buf});
  if (!ran) return;

  if (!same_bits(q_e.buf, before_in[0]) || !same_bits(k_e.buf, before_in[1]) || !same_bits(v_e.buf, before_in[2]) ||
      !same_bits(do_e.buf, before_in[3]) || !same_bits(s_in.buf, ss))
    bug("an input was written");
  check_written_inside(dq, dq_e.buf, before_dq);
  check_written_inside(dkk, dk_e.buf, before_dk);
  check_written_inside(dvv, dv_e.buf, before_dv);
  if (carried) {
    check_written_inside(ds_out, ds_out.buf, before_dsout);
  } else {
    if (!same_bits(ds_out.buf, os)) bug("an input was written");
    check_written_inside(ds_in, ds_in.buf, before_dsin);
  }
  if (d_slopes && (d_slopes_buf.front() != 7.0f || d_slopes_buf.back() != 7.0f)) bug("d_slopes written past its G entries");
  if (B == 0 || H == 0) return;

  const auto ref = lightning::reference::backward_quadratic(q0, k0, v0, do0, c.opt.slopes, c.opt.scale, s0, dso0);
  const auto ref_abs = lightning::reference::backward_quadratic(qa0, ka0, va0, doa0, c.opt.slopes, std::abs(c.opt.scale),
                                                                sa0, dsoa0);
  // The gradients are rounded to E once (the states and d_slopes are fp32).
  const auto compare = [&](const Tensor& out, const auto& view, const std::vector<double>& r,
                           const std::vector<double>& r_abs, int64_t heads, int64_t seq, int64_t dim, const Rounding& u) {
    if (out.view.absent()) return;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t t = 0; t < seq; ++t)
          for (int64_t i = 0; i < dim; ++i) {
            const size_t at = static_cast<size_t>(((b * heads + h) * seq + t) * dim + i);
            check_value(static_cast<float>(view.row(b, h, t)[i]), r[at], r_abs[at], flushed, u);
          }
  };
  // As the forward's: with more than one thread and no d_slopes the sequence may be cut into pieces
  // (README "Threads"), and a corrected 16-bit row is rounded twice.
  Rounding g_rounding = rounding_of<E>();
  if (c.opt.threads != 1 && !d_slopes) g_rounding.u *= 2;
  compare(dq, dq_e.view, ref.dq, ref_abs.dq, H, n, dk, g_rounding);
  compare(dkk, dk_e.view, ref.dk, ref_abs.dk, G, n, dk, g_rounding);
  compare(dvv, dv_e.view, ref.dv, ref_abs.dv, G, n, dv, g_rounding);
  compare(carried ? ds_out : ds_in, dsin_view, ref.d_state_in, ref_abs.d_state_in, G, dk, dv, Rounding{});
  if (d_slopes)
    for (int64_t g = 0; g < G; ++g)
      check_value(d_slopes[g], ref.d_slopes[static_cast<size_t>(g)], std::abs(ref_abs.d_slopes[static_cast<size_t>(g)]),
                  flushed);
}

void fuzz_backward(Bytes& in) { backward_as<float>(in); }
void fuzz_backward_bf16(Bytes& in) { backward_as<lightning::bf16>(in); }
void fuzz_backward_fp16(Bytes& in) { backward_as<lightning::fp16>(in); }

/** Tokens [t0, t0 + len) of a packed view x (batch 1) as a view of their own, as a call on them alone gets it. */
View<const float> sequence_of(const View<const float>& x, int64_t t0, int64_t len) {
  return View<const float>(len ? x.row(0, 0, t0) : x.data, 1, x.heads, len, x.dim, 0, x.head_stride, x.seq_stride);
}

/** Entry s of the states x [S, G, d_k, d_v] as a view [1, G, d_k, d_v]; absent stays absent. */
View<const float> state_of(const View<const float>& x, int64_t s) {
  return x.absent() ? x : View<const float>(x.row(s, 0, 0), 1, x.heads, x.seq, x.dim, 0, x.head_stride, x.seq_stride);
}

/**
 * backward_varlen over a packed call forward_varlen accepted (q, k, v, offsets, options, state_in),
 * from a random d_o and, as the input says, d_state_out and d_slopes: its dq, dk, dv and d_state_in
 * must have the bits of backward() on each sequence alone (and tokens from offsets[num_seqs] on
 * keep theirs), its d_slopes the sum of theirs up to rounding.
 */
void backward_varlen_check(Bytes& in, std::mt19937& rng, const View<float>& q, const View<float>& k,
                           const View<float>& v, const std::vector<int64_t>& offsets, int64_t num_seqs,
                           const Options& opt, const View<const float>& state_in) {
  const int64_t N = q.seq, H = q.heads, G = k.heads, dk = q.dim, dv = v.dim, st = G * dk * dv;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto random = [&](int64_t count) {
    std::vector<float> x(static_cast<size_t>(count));
    for (float& e : x) e = normal(rng);
    return x;
  };
  const std::vector<float> d_o = random(N * H * dv);
  const bool with_ds_out = in.u8() % 2 == 1, with_slopes = G <= 64 && in.u8() % 2 == 1;
  const std::vector<float> ds_out = random(num_seqs * st);
  const auto packed = [&](auto* p, int64_t heads, int64_t t0, int64_t len, int64_t d) {
    using X = std::remove_pointer_t<decltype(p)>;
    return View<X>(p + t0 * heads * d, 1, heads, len, d, len * heads * d, d, heads * d);
  };
  std::vector<float> dq(static_cast<size_t>(N * H * dk), 7.0f), dkk(static_cast<size_t>(N * G * dk), 7.0f),
      dvv(static_cast<size_t>(N * G * dv), 7.0f), ds_in(static_cast<size_t>(num_seqs * st), 7.0f);
  std::vector<float> dq1 = dq, dk1 = dkk, dv1 = dvv, ds_in1 = ds_in, slopes(static_cast<size_t>(G), 7.0f);
  const View<const float> dso = with_ds_out ? lightning::state_view(ds_out.data(), num_seqs, G, dk, dv) : View<const float>();
  try {
    lightning::backward_varlen<float>(q, k, v, packed(d_o.data(), H, 0, N, dv), packed(dq.data(), H, 0, N, dk),
                                      packed(dkk.data(), G, 0, N, dk), packed(dvv.data(), G, 0, N, dv), offsets.data(),
                                      num_seqs, opt, state_in, dso, lightning::state_view(ds_in.data(), num_seqs, G, dk, dv),
                                      with_slopes ? slopes.data() : nullptr);
  } catch (const lightning::invalid_argument& e) {
    std::fprintf(stderr, "%s\n", e.what());
    bug("backward_varlen rejected what forward_varlen accepted");
  }
  std::vector<double> slope_sum(static_cast<size_t>(G), 0.0), slope_abs(static_cast<size_t>(G), 0.0);
  std::vector<char> slope_nan(static_cast<size_t>(G), 0), slope_inf(static_cast<size_t>(G), 0);
  // On one thread: on more, a call on one sequence may be cut along it (README "Threads"), which
  // backward_varlen, whose items are whole sequences, never does.
  Options one_thread = opt;
  one_thread.threads = 1;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t t0 = offsets[s], len = offsets[s + 1] - t0;
    std::vector<float> one(static_cast<size_t>(G));
    lightning::backward<float>(sequence_of(q, t0, len), sequence_of(k, t0, len), sequence_of(v, t0, len),
                               packed(d_o.data(), H, t0, len, dv), packed(dq1.data(), H, t0, len, dk),
                               packed(dk1.data(), G, t0, len, dk), packed(dv1.data(), G, t0, len, dv), one_thread,
                               state_of(state_in, s), state_of(dso, s),
                               lightning::state_view(ds_in1.data() + s * st, 1, G, dk, dv), with_slopes ? one.data() : nullptr);
    for (int64_t g = 0; g < G; ++g) {
      slope_sum[g] += one[g], slope_abs[g] += std::abs(static_cast<double>(one[g]));
      slope_nan[g] |= std::isnan(one[g]), slope_inf[g] |= std::isinf(one[g]);
    }
  }
  if (!same_bits(dq, dq1) || !same_bits(dkk, dk1) || !same_bits(dvv, dv1) || !same_bits(ds_in, ds_in1))
    bug("backward_varlen differs from backward() on each sequence alone");
  if (with_slopes)
    for (int64_t g = 0; g < G; ++g) {
      // A sequence's NaN stays NaN in the sum; with an Inf (a partial sum past FLT_MAX) or a sum past
      // FLT_MAX the sequences' floats and the double partial sums may part, so only finite sums compare.
      const double want = slope_sum[g], got = slopes[g];
      if (slope_nan[g] && !std::isnan(got)) bug("backward_varlen's d_slopes lost a sequence's NaN");
      if (!slope_nan[g] && !slope_inf[g] && std::abs(want) <= FLT_MAX &&
          !(std::abs(got - want) <= 1e-6 * slope_abs[g] + 1e-30))
        bug("backward_varlen's d_slopes is not the sum of the sequences'");
    }
}

void fuzz_varlen(Bytes& in) {
  std::mt19937 rng(static_cast<uint32_t>(in.u64()));
  const auto specials = specials_from(in);
  const int64_t B = in.u8() % 8 == 0 ? in.extent(3) : 1;
  const int64_t N = in.extent(300), G = in.extent(3), dk = in.extent(40), dv = in.extent(40);
  const int64_t H = mul(G, 1 + in.u8() % 3);
  Call c;
  // cu_seqlens-style offsets: num_seqs + 1 cut points, mostly valid, sometimes hostile (null, not starting at 0,
  // decreasing, past the token axis, negative, huge).
  int64_t num_seqs = in.extent(8);
  const bool null_offsets = num_seqs > 64 || in.u8() % 32 == 0;
  std::vector<int64_t> offsets(null_offsets || num_seqs < 0 ? 1 : static_cast<size_t>(num_seqs + 1), 0);
  const int64_t step = std::clamp<int64_t>(N, 0, 1 << 20) / static_cast<int64_t>(offsets.size()) * 2 + 2;
  for (size_t i = 1; i < offsets.size(); ++i) offsets[i] = std::min(N, offsets[i - 1] + in.u8() % step);
  if (in.u8() % 4 == 0) {
    static const int64_t hostile[] = {-1, 1, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min(),
                                      int64_t{1} << 62, 0};
    int64_t& x = offsets[in.u8() % offsets.size()];
    const uint8_t how = in.u8() % 8;
    // x - 1 and N + 1 saturate: the offsets are capped at N, a hostile extent such as INT64_MIN or INT64_MAX.
    const int64_t lowest = std::numeric_limits<int64_t>::min(), highest = std::numeric_limits<int64_t>::max();
    x = how < 6 ? hostile[how] : how == 6 ? (x > lowest ? x - 1 : x) : N < highest ? N + 1 : N;
  }
  Tensor q = make(in, B, H, N, dk, rng, specials), k = make(in, B, G, N, dk, rng, specials),
         v = make(in, B, G, N, dv, rng, specials), o = make(in, B, H, N, dv, rng, {});
  const uint8_t states = in.u8() % 4;
  const bool in_place = states == 3 && in.u8() % 2 == 0;
  Tensor s_in = states & 1 ? make(in, num_seqs, G, dk, dv, rng, specials) : Tensor{};
  Tensor s_out = states & 2 && !in_place ? make(in, num_seqs, G, dk, dv, rng, {}) : Tensor{};
  read_options(in, c, G);
  maybe_mismatch(in, {&q, &k, &v, &o, states & 1 ? &s_in : &q, states & 2 && !in_place ? &s_out : &o}, c);

  bool huge = false;
  for (const Tensor* t : {&q, &k, &v, &o, &s_in, &s_out}) c.reject_if(t->certainly_invalid(), "view"), huge |= t->huge;
  c.reject_if(dk < 1 || dv < 1, "dims");
  c.reject_if(G < 1 || (H >= 0 && H % G != 0), "heads");
  c.reject_if(q.view.batch != 1, "varlen batch");
  c.reject_if(num_seqs < 0, "num_seqs");
  c.reject_if(null_offsets, "offsets null");
  if (!null_offsets && num_seqs >= 0) {
    c.reject_if(offsets[0] != 0, "offsets[0]");
    for (int64_t i = 0; i < num_seqs; ++i) c.reject_if(offsets[i + 1] < offsets[i], "offsets decrease");
    c.reject_if(offsets[num_seqs] > q.view.seq, "offsets past the token axis");
  }
  if (!c.invalid && (huge || too_much_work(1, H, N, dk, dv))) return;

  View<const float> sin_view = s_in.view;
  View<float> sout_view = s_out.view;
  if (in_place) sout_view = View<float>(const_cast<float*>(sin_view.data), sin_view.batch, sin_view.heads, sin_view.seq,
                                        sin_view.dim, sin_view.batch_stride, sin_view.head_stride, sin_view.seq_stride);
  std::vector<float> qs, ks, vs, ss, qa, ka, va, sa;
  const auto q0 = copy_of(q, qs, false), k0 = copy_of(k, ks, false), v0 = copy_of(v, vs, false),
             s0 = copy_of(s_in, ss, false);
  const auto qa0 = copy_of(q, qa, true), ka0 = copy_of(k, ka, true), va0 = copy_of(v, va, true), sa0 = copy_of(s_in, sa, true);
  const Flushed flushed(c.opt.scale, dk, N, q, k, v, s_in);
  const std::vector<std::vector<float>> before_in = {q.buf, k.buf, v.buf};
  const std::vector<float> before_o = o.buf, before_s = s_out.buf;
  const bool ran = run(
      [&] {
        lightning::forward_varlen<float>(q.view, k.view, v.view, o.view, null_offsets ? nullptr : offsets.data(), num_seqs,
                                         c.opt, sin_view, sout_view);
      },
      c, {q, k, v, o, s_in, s_out});
  if (!ran) return;
  check_only_outputs_written({&q, &k, &v}, before_in, o, before_o);
  if (!in_place && states & 2) check_only_outputs_written({&s_in}, {ss}, s_out, before_s);
  if (H == 0) return;
  // Tokens from offsets[num_seqs] on are neither read nor written.
  for (int64_t t = offsets[num_seqs]; t < N; ++t)
    for (int64_t h = 0; h < H; ++h)
      if (std::memcmp(o.view.row(0, h, t), before_o.data() + (o.view.row(0, h, t) - o.buf.data()), sizeof(float) * dv))
        bug("forward_varlen wrote a token past offsets[num_seqs]");
  // Each sequence against the reference on it alone, from its own state.
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t t0 = offsets[s], len = offsets[s + 1] - t0;
    const auto part = [&](const View<const float>& x) { return sequence_of(x, t0, len); };
    const auto ref = lightning::reference::quadratic(part(q0), part(k0), part(v0), c.opt.slopes, c.opt.scale,
                                                     state_of(s0, s));
    const auto ref_abs = lightning::reference::quadratic(part(qa0), part(ka0), part(va0), c.opt.slopes,
                                                         std::abs(c.opt.scale), state_of(sa0, s));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < len; ++t)
        for (int64_t j = 0; j < dv; ++j) {
          const size_t at = static_cast<size_t>((h * len + t) * dv + j);
          check_value(o.view.row(0, h, t0 + t)[j], ref.o[at], ref_abs.o[at], flushed.out);
        }
    if (states & 2)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t i = 0; i < dk; ++i)
          for (int64_t j = 0; j < dv; ++j) {
            const size_t at = static_cast<size_t>((g * dk + i) * dv + j);
            check_value(sout_view.row(s, g, i)[j], ref.state[at], ref_abs.state[at], flushed.state);
          }
  }
  // One more byte (0 past the input's end, where most of the corpus ends): when odd,
  // backward_varlen on the same packed call, checked against backward() on each sequence alone.
  if (in.u8() % 2 == 1) backward_varlen_check(in, rng, q.view, k.view, v.view, offsets, num_seqs, c.opt, sin_view);
}

// One function per public entry point; the first input byte picks it.
void (*const kEntryPoints[])(Bytes&) = {fuzz_forward,      fuzz_decode,       fuzz_backward,      fuzz_varlen,
                                         fuzz_forward_bf16, fuzz_forward_fp16, fuzz_backward_bf16, fuzz_backward_fp16};

// LIGHTNING_FUZZ_ONLY=<index in kEntryPoints> spends a run on one entry point (other inputs return at once).
const int kOnly = [] {
  const char* e = std::getenv("LIGHTNING_FUZZ_ONLY");
  return e && *e ? std::atoi(e) : -1;
}();

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t entry = data[0] % std::size(kEntryPoints);
  if (kOnly >= 0 && entry != static_cast<size_t>(kOnly)) return 0;
  Bytes in{data + 1, size - 1};
  kEntryPoints[entry](in);
  return 0;
}
