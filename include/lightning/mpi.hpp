// Sequence parallelism across MPI processes, forward and backward: each rank holds a consecutive
// piece of the sequence.
//
// Optional: include it only in a program that links MPI (CMake: find_package(MPI COMPONENTS CXX),
// MPI::MPI_CXX). The core headers and lightning.hpp never include it. The algorithm is SPEC.md's
// sequence parallelism with ranks as the pieces: the local tiled forward from a zero state, an
// exclusive scan of the piece states (recursive doubling, ceil(log2 ranks) rounds of MPI_Sendrecv)
// with a non-commutative MPI operator, and the read-out correction,
// all from detail/seqpar.hpp and detail/tiled.hpp.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "lightning/attention.hpp"
#include "lightning/backward.hpp"
#include "lightning/detail/parallel.hpp"
#include "lightning/detail/seqpar.hpp"
#include "lightning/detail/tiled.hpp"
#include "lightning/detail/validate.hpp"
#include "lightning/instantiate.hpp"
#include "lightning/types.hpp"

namespace lightning {
namespace detail {

/**
 * The head of one scan element. An MPI user function gets no context pointer, so everything the
 * operator needs travels in the element: this head, the G slopes (double) and the B x G states
 * (fp32, d_k x d_v each), padded to whole 8-byte words.
 */
struct ScanHead {
  int64_t tokens;  // n: the length of the run of ranks this element covers
  int64_t items;   // batch x kv heads
  int64_t kv_heads, state_size;
};

/** Size in bytes of a scan element (a multiple of 8). */
inline int64_t scan_element_bytes(int64_t items, int64_t kv_heads, int64_t state_size) {
  const int64_t bytes = static_cast<int64_t>(sizeof(ScanHead)) + 8 * kv_heads + 4 * items * state_size;
  return (bytes + 7) / 8 * 8;
}

/** One scan element in 8-byte words, so its doubles and floats are aligned. */
struct ScanElement {
  std::vector<int64_t> words;
  ScanElement(int64_t tokens, int64_t items, int64_t kv_heads, int64_t state_size, const float* slopes)
      : words(static_cast<size_t>(scan_element_bytes(items, kv_heads, state_size) / 8), 0) {
    const ScanHead head{tokens, items, kv_heads, state_size};
    std::memcpy(words.data(), &head, sizeof head);
    for (int64_t g = 0; g < kv_heads; ++g) {
      const double s = slopes ? static_cast<double>(slopes[g]) : 0.0;
      std::memcpy(words.data() + sizeof(ScanHead) / 8 + g, &s, sizeof s);
    }
  }
  void* bytes() { return words.data(); }
  float* states() { return states_of(words.data()); }
  static float* states_of(void* element) {
    auto* p = static_cast<char*>(element);
    ScanHead head;
    std::memcpy(&head, p, sizeof head);
    return reinterpret_cast<float*>(p + sizeof head + 8 * head.kv_heads);
  }
};

/**
 * The scan operator as an MPI user function: inout = in then inout, with `in` the earlier run of
 * ranks (MPI keeps rank order for a non-commutative operator): per item,
 * (A, n_a) then (B, n_b) -> (lambda^{n_b} A + B, n_a + n_b).
 */
template <Path P>
void mpi_scan_op(void* in, void* inout, int* len, MPI_Datatype* type) {
  int bytes = 0;
  MPI_Type_size(*type, &bytes);
  for (int e = 0; e < *len; ++e) {
    char* a = static_cast<char*>(in) + static_cast<int64_t>(e) * bytes;
    char* b = static_cast<char*>(inout) + static_cast<int64_t>(e) * bytes;
    ScanHead ha, hb;
    std::memcpy(&ha, a, sizeof ha);
    std::memcpy(&hb, b, sizeof hb);
    const float* sa = ScanElement::states_of(a);
    float* sb = ScanElement::states_of(b);
    for (int64_t i = 0; i < hb.items; ++i) {
      double slope = 0;
      std::memcpy(&slope, b + sizeof hb + 8 * (i % hb.kv_heads), sizeof slope);
      combine_states<P>(hb.state_size, sa + i * hb.state_size, sb + i * hb.state_size, slope, hb.tokens);
    }
    hb.tokens += ha.tokens;
    std::memcpy(b, &hb, sizeof hb);
  }
}

/** Frees an MPI datatype and operator however the call leaves. */
struct MpiScanHandles {
  MPI_Datatype type = MPI_DATATYPE_NULL;
  MPI_Op op = MPI_OP_NULL;
  ~MpiScanHandles() {
    if (op != MPI_OP_NULL) MPI_Op_free(&op);
    if (type != MPI_DATATYPE_NULL) MPI_Type_free(&type);
  }
};

template <class T>
constexpr int64_t storage_code() {
  return std::is_same_v<T, float> ? 1 : std::is_same_v<T, bf16> ? 2 : 3;
}

/** FNV-1a over the bytes of the slopes (or 0 for none), to compare them across ranks. */
inline int64_t slopes_hash(const float* slopes, int64_t kv_heads) {
  if (!slopes) return 0;
  uint64_t h = 1469598103934665603ull;
  const auto* p = reinterpret_cast<const unsigned char*>(slopes);
  for (int64_t i = 0; i < 4 * kv_heads; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return static_cast<int64_t>(h >> 1) | 1;  // never 0, so "no slopes" differs from every slope set
}

/** The facts every rank must agree on: storage type, batch, heads, dims, scale bits, slopes hash. */
template <class T>
void agreement_fields(const View<const T>& q, const View<const T>& k, const View<const T>& v, const Options& options,
                      int64_t (&fields)[8]) {
  uint32_t scale_bits = 0;
  std::memcpy(&scale_bits, &options.scale, 4);
  const int64_t f[8] = {storage_code<T>(), q.batch, q.heads, k.heads, q.dim, v.dim, static_cast<int64_t>(scale_bits),
                        slopes_hash(options.slopes, k.heads)};
  std::copy(f, f + 8, fields);
}

/**
 * One MPI_Allreduce of every rank's agreement fields, its local check result and a few `extras`
 * (returned as their maximum over the ranks), before anything is computed: every rank then throws
 * the same lightning::invalid_argument (the first failing rank's own message, broadcast) or none
 * does, so no rank is left waiting in a later collective.
 */
inline std::vector<int64_t> mpi_agree(MPI_Comm comm, const char* where, int rank, int ranks,
                                      const std::string& local_error, const int64_t (&fields)[8],
                                      const std::vector<int64_t>& extras) {
  static const char* const names[8] = {"storage types", "q.batch", "q.heads", "k.heads", "q.dim (d_k)",
                                       "v.dim (d_v)", "options.scale", "options.slopes"};
  constexpr int F = 8;
  // max over ranks of: each field, minus each field (so min = -max(-x)), -(first failing rank), the extras.
  std::vector<int64_t> send(2 * F + 1 + extras.size()), recv(send.size());
  for (int i = 0; i < F; ++i) {
    send[static_cast<size_t>(i)] = fields[i];
    send[static_cast<size_t>(F + i)] = -fields[i];
  }
  send[2 * F] = local_error.empty() ? INT64_MIN : -static_cast<int64_t>(rank);
  std::copy(extras.begin(), extras.end(), send.begin() + 2 * F + 1);
  MPI_Allreduce(send.data(), recv.data(), static_cast<int>(send.size()), MPI_INT64_T, MPI_MAX, comm);
  if (recv[2 * F] != INT64_MIN) {
    const int root = static_cast<int>(-recv[2 * F]);
    char message[1024] = {};
    if (rank == root) std::strncpy(message, local_error.c_str(), sizeof message - 1);
    MPI_Bcast(message, sizeof message, MPI_CHAR, root, comm);
    throw invalid_argument(message);
  }
  for (int i = 0; i < F; ++i) {
    const int64_t hi = recv[static_cast<size_t>(i)], lo = -recv[static_cast<size_t>(F + i)];
    if (hi == lo) continue;
    if (i == 6) {
      float mine;
      const auto bits = static_cast<uint32_t>(fields[i]);
      std::memcpy(&mine, &bits, 4);
      fail(where, names[i], " differs across ranks (rank ", rank, " of ", ranks, " has ", mine, ")");
    }
    if (i == 7 || i == 0) fail(where, names[i], " differ across ranks (rank ", rank, " of ", ranks, ")");
    fail(where, names[i], " differs across ranks: from ", lo, " to ", hi, " (rank ", rank, " of ", ranks, " has ",
         fields[i], ")");
  }
  return std::vector<int64_t>(recv.begin() + 2 * F + 1, recv.end());
}

/** The same scan datatype and operator on every rank: one element of `bytes` bytes. */
template <Path P>
void make_scan(int64_t bytes, MpiScanHandles& h) {
  MPI_Type_contiguous(static_cast<int>(bytes), MPI_BYTE, &h.type);
  MPI_Type_commit(&h.type);
  MPI_Op_create(&mpi_scan_op<P>, /*commute=*/0, &h.op);
}

/**
 * Exclusive scan in ceil(log2 ranks) rounds whatever the MPI library's MPI_Exscan schedule (Open MPI's
 * default is a chain of ranks - 1 rounds): in round d = 1, 2, 4, ... rank r sends the combination of
 * ranks (r - 2d, r] it holds to rank r + d and folds in what rank r - d sends, earlier ranks on the
 * left, as the non-commutative operator requires. `recv` on rank 0 is left as it was.
 */
inline void exscan(const void* send, void* recv, int64_t bytes, MPI_Datatype type, MPI_Op op, MPI_Comm comm) {
  // On a duplicate of comm, so that no message of the caller's (MPI_ANY_TAG, MPI_ANY_SOURCE) can match ours.
  MPI_Comm own = MPI_COMM_NULL;
  MPI_Comm_dup(comm, &own);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(own, &rank);
  MPI_Comm_size(own, &ranks);
  std::vector<unsigned char> partial(static_cast<const unsigned char*>(send), static_cast<const unsigned char*>(send) + bytes),
      incoming(static_cast<size_t>(bytes));
  bool have = false;  // whether recv holds ranks [max(0, r - 2d + 1), r - 1] yet
  for (int64_t d = 1; d < ranks; d *= 2) {
    // A pair of ranks meets in one round only, so one tag serves every round.
    const int to = rank + d < ranks ? static_cast<int>(rank + d) : MPI_PROC_NULL;
    const int from = rank >= d ? static_cast<int>(rank - d) : MPI_PROC_NULL;
    MPI_Sendrecv(partial.data(), 1, type, to, 0, incoming.data(), 1, type, from, 0, own, MPI_STATUS_IGNORE);
    if (from == MPI_PROC_NULL) continue;
    if (have) {
      MPI_Reduce_local(incoming.data(), recv, 1, type, op);  // recv = incoming (earlier) op recv
    } else {
      std::memcpy(recv, incoming.data(), static_cast<size_t>(bytes));
      have = true;
    }
    MPI_Reduce_local(incoming.data(), partial.data(), 1, type, op);
  }
  MPI_Comm_free(&own);
}

/** The element size, checked against what one MPI count can hold (the same on every rank). */
inline int64_t checked_scan_bytes(const char* where, int64_t B, int64_t G, int64_t dk, int64_t dv) {
  const int64_t bytes = scan_element_bytes(B * G, G, dk * dv);
  if (bytes > INT_MAX)
    fail(where, "the scan element of ", bytes, " bytes (batch ", B, " x kv heads ", G, " states of ", dk, " x ", dv,
         ") exceeds INT_MAX; split the batch over several calls");
  return bytes;
}

inline void copy_states(const View<const float>& from, const View<float>& to) {
  for (int64_t b = 0; b < to.batch; ++b)
    for (int64_t g = 0; g < to.heads; ++g)
      for (int64_t i = 0; i < to.seq; ++i) std::copy_n(from.row(b, g, i), to.dim, to.row(b, g, i));
}

/**
 * Whether mpi::backward without d_slopes corrects rows (mpi_backward_corrected) rather than running
 * each piece's state and adjoint updates first and then its backward from the true ones. Counted in
 * d_k x d_v products per row, for the rank that pays most: the corrections take one per row while
 * its weight lambda^t has not underflowed (at most `longest` rows, the longest piece), per q head
 * for dQ (not on rank 0) and once each for dK and dV (not on the last rank); the updates take one
 * per row of the piece for S (not on the last rank) and one per q head for the adjoint (not on rank 0).
 */
inline bool corrections_cheaper(const float* slopes, int64_t G, int64_t group, int64_t longest, int ranks) {
  // With 2 ranks the first corrects dK and dV and the last dQ; from 3 on a middle rank does both.
  const double per_corrected_row = ranks > 2 ? group + 2.0 : std::max<double>(2.0, group);
  const double per_updated_row = ranks > 2 ? group + 1.0 : static_cast<double>(group);
  double corrections = 0, updates = 0;
  for (int64_t g = 0; g < G; ++g) {
    const double rows = static_cast<double>(rows_before_underflow(slopes ? slopes[g] : 0.0, longest));
    corrections += per_corrected_row * rows;
    updates += per_updated_row * static_cast<double>(longest);
  }
  return corrections <= updates;
}

/**
 * The two scans of mpi::backward: rank r > 0 receives in `states_in` the states after ranks 0 .. r - 1,
 * rank r < last in `adjoints_out` the adjoints before ranks r + 1 .. last (the same operator in
 * reverse rank order, on a reversed communicator): the true state before its piece and the gradient
 * of the state after it.
 */
template <Path P>
void scan_states_and_adjoints(MPI_Comm comm, ScanElement& states, ScanElement& states_in, ScanElement& adjoints,
                              ScanElement& adjoints_out, int64_t bytes) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  MpiScanHandles h;
  make_scan<P>(bytes, h);
  exscan(states.bytes(), states_in.bytes(), bytes, h.type, h.op, comm);
  MPI_Comm reversed = MPI_COMM_NULL;
  MPI_Comm_split(comm, 0, ranks - 1 - rank, &reversed);
  exscan(adjoints.bytes(), adjoints_out.bytes(), bytes, h.type, h.op, reversed);
  MPI_Comm_free(&reversed);
}

/**
 * mpi::backward after its checks (ranks > 1), rerunning each piece from the true state and adjoint:
 * each rank first computes its piece's final state from a zero state (rank 0: from state_in; the
 * forward's state updates alone) and its adjoint from a zero gradient at its end (the last rank:
 * from d_state_out; the reverse pass's updates alone), the states are scanned forward and the
 * adjoints in reverse rank order, and then each rank runs lightning::backward on its piece with both.
 * `slope_sum` (G floats, or null) gets d_slopes, summed over the ranks.
 */
template <class T>
void mpi_backward_rerun(MPI_Comm comm, View<const T> q, View<const T> k, View<const T> v, View<const T> d_o,
                        View<T> dq, View<T> dk, View<T> dv, const Options& options, View<const float> state_in,
                        View<const float> d_state_out, View<float> d_state_in, float* slope_sum, int64_t bytes) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  const int last = ranks - 1;
  const int64_t B = q.batch, G = k.heads, d_k = q.dim, d_v = v.dim, n = q.seq, size = d_k * d_v;
  const int64_t block = block_for(options, d_k, d_v);
  ScanElement fwd(n, B * G, G, size, options.slopes), fwd_in(0, B * G, G, size, options.slopes);
  ScanElement adj(n, B * G, G, size, options.slopes), adj_out(0, B * G, G, size, options.slopes);
  with_path(options.path, [&](auto path) {
    constexpr Path P = decltype(path)::value;
    // The piece's final state from a zero state (rank 0: from state_in): the forward without o, only
    // its state updates. The last rank's goes to no other rank.
    if (rank < last)
      forward_all<P>(ForwardArgs<T>{q, k, v, View<T>(), rank == 0 ? state_in : View<const float>(),
                                    state_view(fwd.states(), B, G, d_k, d_v), options.slopes, options.scale, block},
                     options.threads);
    // The piece's adjoint at its start from a zero gradient at its end (the last rank: from
    // d_state_out): the reverse pass alone, only its updates of the adjoint. Rank 0's goes to no other
    // rank. Both before either scan, so that no rank waits for another's state before its adjoint.
    if (rank > 0)
      backward_all<P>(BackwardArgs<T>{q, k, v, d_o, {}, {}, {}, {}, rank == last ? d_state_out : View<const float>(),
                                      state_view(adj.states(), B, G, d_k, d_v), nullptr, options.slopes,
                                      options.scale, block},
                      options.threads, nullptr, 0);
    scan_states_and_adjoints<P>(comm, fwd, fwd_in, adj, adj_out, bytes);
  });
  const View<const float> s_in = rank == 0 ? state_in : state_view(static_cast<const float*>(fwd_in.states()), B, G, d_k, d_v);
  const View<const float> ds_out =
      rank == last ? d_state_out : state_view(static_cast<const float*>(adj_out.states()), B, G, d_k, d_v);
  lightning::backward(q, k, v, d_o, dq, dk, dv, options, s_in, ds_out, rank == 0 ? d_state_in : View<float>(),
                      slope_sum);
  if (slope_sum) MPI_Allreduce(MPI_IN_PLACE, slope_sum, static_cast<int>(G), MPI_FLOAT, MPI_SUM, comm);
}

/**
 * mpi::backward without d_slopes, after its checks (ranks > 1): each rank runs both passes on its
 * piece from a zero state and adjoint (rank 0 from state_in, the last rank from d_state_out), as
 * backward_split's pieces do on threads, leaving S^T after the piece and the adjoint before it; the
 * states are scanned forward and the adjoints in reverse rank order, and the rows are corrected
 * (add_gradient_rows): a later rank's dQ, an earlier rank's dK and dV. Rank 0's d_state_in is its
 * adjoint plus lambda^{n_0} times the gradient reaching the state after its piece.
 */
template <class T>
void mpi_backward_corrected(MPI_Comm comm, View<const T> q, View<const T> k, View<const T> v, View<const T> d_o,
                            View<T> dq, View<T> dk, View<T> dv, const Options& options, View<const float> state_in,
                            View<const float> d_state_out, View<float> d_state_in, int64_t bytes) {
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  const int last = ranks - 1;
  const int64_t B = q.batch, G = k.heads, d_k = q.dim, d_v = v.dim, n = q.seq, size = d_k * d_v, items = B * G;
  ScanElement st(n, items, G, size, options.slopes), st_in(0, items, G, size, options.slopes);
  ScanElement adj(n, items, G, size, options.slopes), adj_out(0, items, G, size, options.slopes);
  BackwardArgs<T> local{q, k, v, d_o, dq, dk, dv, rank == 0 ? state_in : View<const float>(),
                        rank == last ? d_state_out : View<const float>(), state_view(adj.states(), B, G, d_k, d_v),
                        nullptr, options.slopes, options.scale,
                        options.block_size ? options.block_size : default_backward_block_size(d_k, d_v, options.path)};
  local.states_t_out = st.states();
  const auto slope = [&](int64_t item) { return options.slopes ? static_cast<double>(options.slopes[item % G]) : 0.0; };
  with_path(options.path, [&](auto path) {
    constexpr Path P = decltype(path)::value;
    backward_all<P>(local, options.threads, nullptr, 0);
    scan_states_and_adjoints<P>(comm, st, st_in, adj, adj_out, bytes);  // st_in: S^T before the piece
    Floats g_t(rank < last ? static_cast<size_t>(items * size) : 0);  // its transposes, for dK
    std::vector<GradientRows> lines;
    for (int64_t i = 0; i < items; ++i) {
      const float* g_out = rank < last ? adj_out.states() + i * size : nullptr;
      if (g_out) transpose<P>(d_k, d_v, g_out, d_v, g_t.data() + i * size, d_k);
      add_gradient_rows(lines, local, i / G, i % G, 0, n, slope(i), rank > 0 ? st_in.states() + i * size : nullptr,
                        g_out, g_out ? g_t.data() + i * size : nullptr);
    }
    const int64_t rows = static_cast<int64_t>(lines.size()) * n;
    correct_gradients<P>(local, worker_count(options.threads, (rows + local.block - 1) / local.block), lines);
    if (rank == 0 && !d_state_in.absent())
      for (int64_t i = 0; i < items; ++i) {
        float* r = adj.states() + i * size;
        combine_states<P>(size, adj_out.states() + i * size, r, slope(i), n);
        for (int64_t c = 0; c < d_k; ++c) std::copy_n(r + c * d_v, d_v, d_state_in.row(i / G, i % G, c));
      }
  });
}

}  // namespace detail

namespace mpi {

/** Bytes of the one element each rank sends per scan round: the states plus a small head. */
inline int64_t scan_bytes(int64_t batch, int64_t kv_heads, int64_t d_k, int64_t d_v) {
  return detail::scan_element_bytes(batch * kv_heads, kv_heads, d_k * d_v);
}

/**
 * lightning::forward over a sequence split across the ranks of `comm` (a collective call: every
 * rank calls it). Rank r passes its consecutive piece of the tokens, rank 0 the first: q
 * [batch, H, n_r, d_k], k [batch, G, n_r, d_k], v [batch, G, n_r, d_v], o [batch, H, n_r, d_v].
 * Pieces may differ in length and may be empty; batch, heads, dims, storage type, options.scale
 * and options.slopes must be the same on every rank (options.threads, block_size and path are
 * each rank's own). The result equals forward() on the whole sequence within SPEC.md's tolerance.
 *
 * state_in (fp32 [batch, G, d_k, d_v], optional) is the sequence's initial state and is given on
 * rank 0 only. state_out (optional) receives the final state of the whole sequence on every rank
 * that passes one: computed on the last rank and broadcast when another rank asks for it.
 *
 * Communication: one MPI_Allreduce of 19 int64 (the checks), an exclusive scan (detail::exscan) in
 * which each rank sends at most one scan_bytes(batch, G, d_k, d_v) element per round, ceil(log2 ranks) rounds, and an MPI_Bcast of the final states only when a rank
 * other than the last passes state_out; nothing grows with n. MPI is called from the calling
 * thread only (options.threads' workers never call it), so MPI_THREAD_FUNNELED is enough.
 *
 * Bad input on any rank (a local check of forward(), or a shape, type, scale or slopes that
 * differ across ranks, or state_in on a rank other than 0) throws lightning::invalid_argument on
 * every rank, with the same message, before anything is written.
 */
template <class T>
void forward(MPI_Comm comm, View<const T> q, View<const T> k, View<const T> v, View<T> o,
             const Options& options = {}, View<const float> state_in = {}, View<float> state_out = {}) {
  if (comm == MPI_COMM_NULL) detail::fail("lightning::mpi::forward", "comm is MPI_COMM_NULL");
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  const std::string where =
      "lightning::mpi::forward (rank " + std::to_string(rank) + " of " + std::to_string(ranks) + ")";
  // This rank's checks, caught so that every rank reaches the agreement below.
  std::string error;
  int64_t fields[8] = {};
  try {
    std::vector<detail::Span> inputs;
    detail::Span out;
    detail::check_qkvo(where.c_str(), q, k, v, o, inputs, out);
    detail::check_options(where.c_str(), options, k.heads);
    detail::check_states(where.c_str(), state_in, state_out, q.batch, k.heads, q.dim, v.dim, inputs, out);
    detail::agreement_fields(q, k, v, options, fields);
  } catch (const invalid_argument& e) {
    error = e.what();
  }
  constexpr const char* all = "lightning::mpi::forward";
  // Extras: the highest rank > 0 passing state_in; whether a rank other than the last wants state_out.
  const std::vector<int64_t> agreed = detail::mpi_agree(
      comm, all, rank, ranks, error, fields,
      {!state_in.absent() && rank > 0 ? rank : -1, !state_out.absent() && rank + 1 < ranks ? 1 : 0});
  if (agreed[0] > 0)
    detail::fail(all, "state_in is given on rank ", agreed[0], ": only rank 0 holds the sequence's initial state");
  const bool state_out_elsewhere = agreed[1] != 0;

  const int64_t B = q.batch, G = k.heads, H = q.heads, dk = q.dim, dv = v.dim, n = q.seq, size = dk * dv;
  const int64_t bytes = detail::checked_scan_bytes(all, B, G, dk, dv);
  const int64_t block = detail::block_for(options, dk, dv);
  detail::ScanElement local(n, B * G, G, size, options.slopes), prefix(0, B * G, G, size, options.slopes);
  const View<float> local_states = state_view(local.states(), B, G, dk, dv);

  detail::with_path(options.path, [&](auto path) {
    constexpr Path P = decltype(path)::value;
    // The local piece from a zero state (rank 0 from state_in): its outputs and its final state.
    const detail::ForwardArgs<T> args{q, k, v, o, rank == 0 ? state_in : View<const float>(), local_states,
                                      options.slopes, options.scale, block};
    detail::forward_all<P>(args, options.threads);
    if (ranks == 1) {
      if (!state_out.absent()) detail::copy_states(local_states, state_out);
      return;
    }
    // The exclusive scan: rank r > 0 receives the true state after ranks 0 .. r - 1.
    detail::MpiScanHandles h;
    detail::make_scan<P>(bytes, h);
    detail::exscan(local.bytes(), prefix.bytes(), bytes, h.type, h.op, comm);
    const float* incoming = prefix.states();
    if (rank > 0 && n > 0) {
      // The rows of every (batch, q head) laid end to end, cut into one equal share per worker.
      const int64_t group = H / G, rows = B * H * n;
      const int workers = detail::worker_count(options.threads, (rows + block - 1) / block);
      const std::vector<int64_t> lengths(static_cast<size_t>(B * H), n);
      detail::parallel_for(workers, workers, [&](int, int64_t share) {
        detail::Floats scratch;
        detail::for_share_of_runs(lengths, workers, share, [&](size_t item, int64_t t, int64_t to) {
          const int64_t b = static_cast<int64_t>(item) / H, hq = static_cast<int64_t>(item) % H, g = hq / group;
          detail::correct_readout<P>(q, o, b, hq, 0, t, to, incoming + (b * G + g) * size,
                                     options.slopes ? options.slopes[g] : 0.0, options.scale, block, scratch);
        });
      });
    }
    // The final state: the last rank's inclusive scan, sent to the others when they ask.
    float* final_states = local.states();
    if (rank == ranks - 1 && rank > 0)
      for (int64_t i = 0; i < B * G; ++i)
        detail::combine_states<P>(size, incoming + i * size, final_states + i * size,
                                  options.slopes ? options.slopes[i % G] : 0.0, n);
    if (state_out_elsewhere)
      MPI_Bcast(final_states, static_cast<int>(B * G * size), MPI_FLOAT, ranks - 1, comm);
    if (!state_out.absent()) detail::copy_states(local_states, state_out);
  });
}

/** forward() for mutable inputs. */
template <class T>
void forward(MPI_Comm comm, View<T> q, View<T> k, View<T> v, View<T> o, const Options& options = {},
             View<const float> state_in = {}, View<float> state_out = {}) {
  forward<T>(comm, View<const T>(q), View<const T>(k), View<const T>(v), o, options, state_in, state_out);
}

/**
 * lightning::backward over a sequence split across the ranks of `comm` (collective), with the
 * pieces, shapes and options of mpi::forward: each rank passes its piece of q, k, v and d_o and
 * receives its piece of dq, dk and dv. state_in (the forward's initial state) is given on rank 0
 * only, d_state_out (the gradient of the final state) on the last rank only, and d_state_in is
 * written on rank 0 only (each optional; on another rank it is an error). d_slopes, if given, gets
 * the gradient with respect to options.slopes summed over the whole sequence, on every rank that
 * passes it.
 *
 * How, in one of two ways, chosen alike on every rank (corrections_cheaper):
 * - each rank runs the backward on its piece from a zero state and adjoint, the pieces' final states
 *   and adjoints are scanned, and the rows whose weights have not underflowed are corrected
 *   (mpi_backward_corrected): a backward of the piece, and on a middle rank group + 2 d_k x d_v
 *   products (group: q heads per k/v head) for each row whose weight has not underflowed (the
 *   forward takes group + 1 per row): little when the heads decay within a piece;
 * - or each rank first computes its piece's final state and adjoint from zero (the forward's and
 *   the reverse pass's state updates alone), they are scanned, and each rank runs the backward of
 *   its piece from the true ones (mpi_backward_rerun): a backward and, on a middle rank, group + 1
 *   products for every row; always so with d_slopes, which needs the true states within each piece.
 * Communication: the checks' MPI_Allreduce, MPI_Comm_split (the reversed order), two exclusive scans
 * (detail::exscan) of scan_bytes() elements, and an MPI_Allreduce of G floats when d_slopes is asked
 * for; nothing grows with n.
 */
template <class T>
void backward(MPI_Comm comm, View<const T> q, View<const T> k, View<const T> v, View<const T> d_o, View<T> dq,
              View<T> dk, View<T> dv, const Options& options = {}, View<const float> state_in = {},
              View<const float> d_state_out = {}, View<float> d_state_in = {}, float* d_slopes = nullptr) {
  constexpr const char* all = "lightning::mpi::backward";
  if (comm == MPI_COMM_NULL) detail::fail(all, "comm is MPI_COMM_NULL");
  int rank = 0, ranks = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &ranks);
  const std::string where = std::string(all) + " (rank " + std::to_string(rank) + " of " + std::to_string(ranks) + ")";
  std::string error;
  int64_t fields[8] = {};
  try {
    detail::check_backward(where.c_str(), q, k, v, d_o, dq, dk, dv, options, state_in, d_state_out, d_state_in,
                           d_slopes);
    detail::agreement_fields(q, k, v, options, fields);
  } catch (const invalid_argument& e) {
    error = e.what();
  }
  const int last = ranks - 1;
  // Extras: a rank passing state_in or d_state_in other than 0, or d_state_out other than the last; d_slopes anywhere.
  const std::vector<int64_t> agreed = detail::mpi_agree(
      comm, all, rank, ranks, error, fields,
      {!state_in.absent() && rank > 0 ? rank : -1, !d_state_out.absent() && rank < last ? rank : -1,
       !d_state_in.absent() && rank > 0 ? rank : -1, d_slopes ? 1 : 0, q.seq});
  if (agreed[0] > 0)
    detail::fail(all, "state_in is given on rank ", agreed[0], ": only rank 0 holds the sequence's initial state");
  if (agreed[1] >= 0)
    detail::fail(all, "d_state_out is given on rank ", agreed[1], ": only the last rank (", last,
                 ") holds the gradient of the final state");
  if (agreed[2] > 0)
    detail::fail(all, "d_state_in is given on rank ", agreed[2], ": only rank 0 receives the gradient of the initial state");
  const bool slopes_wanted = agreed[3] != 0;
  const int64_t longest = agreed[4];

  const int64_t G = k.heads;
  const int64_t bytes = detail::checked_scan_bytes(all, q.batch, G, q.dim, v.dim);
  std::vector<float> slope_sum(static_cast<size_t>(G), 0.0f);
  if (ranks == 1) {
    lightning::backward(q, k, v, d_o, dq, dk, dv, options, state_in, d_state_out, d_state_in,
                        slopes_wanted ? slope_sum.data() : nullptr);
    if (d_slopes) std::copy(slope_sum.begin(), slope_sum.end(), d_slopes);
    return;
  }
  if (!slopes_wanted && detail::corrections_cheaper(options.slopes, G, q.heads / G, longest, ranks)) {
    detail::mpi_backward_corrected(comm, q, k, v, d_o, dq, dk, dv, options, state_in, d_state_out, d_state_in, bytes);
    return;
  }
  detail::mpi_backward_rerun(comm, q, k, v, d_o, dq, dk, dv, options, state_in, d_state_out, d_state_in,
                             slopes_wanted ? slope_sum.data() : nullptr, bytes);
  if (d_slopes) std::copy(slope_sum.begin(), slope_sum.end(), d_slopes);
}

/** backward() for mutable inputs. */
template <class T>
void backward(MPI_Comm comm, View<T> q, View<T> k, View<T> v, View<T> d_o, View<T> dq, View<T> dk, View<T> dv,
              const Options& options = {}, View<const float> state_in = {}, View<const float> d_state_out = {},
              View<float> d_state_in = {}, float* d_slopes = nullptr) {
  backward<T>(comm, View<const T>(q), View<const T>(k), View<const T>(v), View<const T>(d_o), dq, dk, dv, options,
              state_in, d_state_out, d_state_in, d_slopes);
}

}  // namespace mpi
}  // namespace lightning
