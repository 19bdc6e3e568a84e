// SPDX-License-Identifier: Apache-2.0
// Subset-search and filtering rules over an (n, D) row-major block: MDA (minimum-diameter
// averaging), SMEA (smallest maximum eigenvalue averaging) and CAF (covariance-bound agnostic
// filter), as ByzFL 0.0.11 defines them. Each reads X twice: once for the pairwise squared
// distances (distance.hpp), once to average the chosen rows. Everything in between works in the
// n-dimensional row space on the n x n distance matrix: the covariance of a weighted set of
// rows has the nonzero eigenvalues of its double-centred distance matrix (classical scaling),
// so no D x D matrix is ever formed and the search costs nothing per coordinate.
// A row with any non-finite entry is at infinite distance from every other row (DESIGN §4).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "cyclad/common.hpp"
#include "cyclad/distance.hpp"
#include "cyclad/parallel.hpp"

namespace cyclad::kernels {

/// The largest number of subsets, C(n, f), MDA and SMEA accept: their exact search is
/// exponential in f.
inline constexpr std::uint64_t kMaxSubsets = 1000000;

/// C(n, f), saturated at kMaxSubsets + 1.
inline std::uint64_t subset_count(std::size_t n, std::size_t f) {
  if (f > n) return 0;
  const std::size_t r = std::min(f, n - f);
  std::uint64_t c = 1;
  for (std::size_t i = 1; i <= r; ++i) {
    // c * (n - r + i) / i is exact (c = C(n - r + i - 1, i - 1)); c <= kMaxSubsets keeps it in
    // range.
    c = c * static_cast<std::uint64_t>(n - r + i) / static_cast<std::uint64_t>(i);
    if (c > kMaxSubsets) return kMaxSubsets + 1;
  }
  return c;
}

namespace subset_detail {

inline constexpr double kInf = std::numeric_limits<double>::infinity();

inline void check_subset_args(std::size_t n, std::size_t f, const char* rule) {
  require(2 * f < n, std::string(rule) + " needs 0 <= f and 2f < n");
  require(subset_count(n, f) <= kMaxSubsets,
          std::string(rule) + " searches C(n, f) subsets; at most " +
              std::to_string(kMaxSubsets) + " are allowed");
}

/// Exponent e with max |v| * 2^e in [1, 2) (0 for an all-zero or non-finite v): scaling by 2^e
/// is exact and keeps squares of entries far from underflow (distances of ordinary rows scaled
/// down for an overflow-sized row are near 1e-292).
inline int normaliser(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  if (!(m > 0.0) || !std::isfinite(m)) return 0;
  return -std::ilogb(m);
}

inline void scale_by(std::vector<double>& v, int e) {
  if (e == 0) return;
  for (double& x : v) x = std::ldexp(x, e);
}

/// Largest eigenvalue of the symmetric k x k matrix `a` (row-major, destroyed): Householder
/// reduction to tridiagonal form, then bisection on Sturm counts to a relative width of a few
/// ulps. O(k^3) flops, scalar code (the same bits on every ISA).
inline double largest_eigenvalue(std::vector<double>& a, std::size_t k, std::vector<double>& d,
                                 std::vector<double>& e, std::vector<double>& v,
                                 std::vector<double>& p) {
  if (k == 1) return a[0];
  d.assign(k, 0.0);
  e.assign(k, 0.0);
  v.assign(k, 0.0);
  p.assign(k, 0.0);
  for (std::size_t j = 0; j + 2 < k; ++j) {
    double sigma = 0.0;
    for (std::size_t i = j + 2; i < k; ++i) sigma += a[i * k + j] * a[i * k + j];
    const double x0 = a[(j + 1) * k + j];
    if (sigma == 0.0) {
      e[j] = x0;
      continue;
    }
    const double norm = std::sqrt(x0 * x0 + sigma);
    const double alpha = x0 >= 0.0 ? -norm : norm;
    v[j + 1] = x0 - alpha;
    for (std::size_t i = j + 2; i < k; ++i) v[i] = a[i * k + j];
    const double h = v[j + 1] * v[j + 1] + sigma, beta = 2.0 / h;
    double vp = 0.0;
    for (std::size_t i = j + 1; i < k; ++i) {
      double s = 0.0;
      for (std::size_t m = j + 1; m < k; ++m) s += a[i * k + m] * v[m];
      p[i] = beta * s;
      vp += v[i] * p[i];
    }
    const double g = 0.5 * beta * vp;
    for (std::size_t i = j + 1; i < k; ++i) p[i] -= g * v[i];  // q = p - (beta/2)(v'p) v
    for (std::size_t i = j + 1; i < k; ++i) {
      for (std::size_t m = j + 1; m < k; ++m) a[i * k + m] -= v[i] * p[m] + p[i] * v[m];
    }
    e[j] = alpha;
  }
  e[k - 2] = a[(k - 1) * k + (k - 2)];
  for (std::size_t i = 0; i < k; ++i) d[i] = a[i * k + i];
  // Gershgorin interval and the pivot floor of LAPACK's dstebz.
  double lo = kInf, hi = -kInf, emax = 0.0;
  for (std::size_t i = 0; i < k; ++i) {
    const double r = (i > 0 ? std::abs(e[i - 1]) : 0.0) + (i + 1 < k ? std::abs(e[i]) : 0.0);
    lo = std::min(lo, d[i] - r);
    hi = std::max(hi, d[i] + r);
    if (i + 1 < k) emax = std::max(emax, e[i] * e[i]);
  }
  if (!(lo <= hi)) return std::numeric_limits<double>::quiet_NaN();
  const double pivmin = std::numeric_limits<double>::min() * std::max(1.0, emax);
  // Number of eigenvalues below x.
  auto below = [&](double x) {
    std::size_t cnt = 0;
    double q = d[0] - x;
    for (std::size_t i = 0;; ++i) {
      if (std::abs(q) < pivmin) q = -pivmin;
      if (q < 0.0) ++cnt;
      if (i + 1 == k) break;
      q = d[i + 1] - x - e[i] * e[i] / q;
    }
    return cnt;
  };
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (!(mid > lo && mid < hi)) break;
    if (hi - lo <= 4.0 * std::numeric_limits<double>::epsilon() *
                       std::max(std::abs(lo), std::abs(hi))) {
      break;
    }
    if (below(mid) == k) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return hi;
}

/// Largest eigenvalue and a unit eigenvector of the symmetric m x m matrix `a` (row-major,
/// destroyed) by cyclic Jacobi rotations; ties between equal eigenvalues go to the lowest
/// diagonal position. O(m^3) per sweep, a few sweeps; scalar code.
inline double top_eigenpair(std::vector<double>& a, std::size_t m, std::vector<double>& vec,
                            std::vector<double>& V) {
  V.assign(m * m, 0.0);
  for (std::size_t i = 0; i < m; ++i) V[i * m + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (std::size_t p = 0; p < m; ++p) {
      diag += a[p * m + p] * a[p * m + p];
      for (std::size_t q = p + 1; q < m; ++q) off += a[p * m + q] * a[p * m + q];
    }
    if (!(off > 1e-34 * diag)) break;  // off-diagonal below (1e-17 |A|)^2: converged
    for (std::size_t p = 0; p + 1 < m; ++p) {
      for (std::size_t q = p + 1; q < m; ++q) {
        const double apq = a[p * m + q];
        if (apq == 0.0) continue;
        const double theta = (a[q * m + q] - a[p * m + p]) / (2.0 * apq);
        double t = 1.0 / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        if (std::abs(theta) > 1e150) t = 0.5 / std::abs(theta);
        if (theta < 0.0) t = -t;
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (std::size_t r = 0; r < m; ++r) {
          if (r == p || r == q) continue;
          const double arp = a[r * m + p], arq = a[r * m + q];
          a[r * m + p] = a[p * m + r] = c * arp - s * arq;
          a[r * m + q] = a[q * m + r] = s * arp + c * arq;
        }
        a[p * m + p] -= t * apq;
        a[q * m + q] += t * apq;
        a[p * m + q] = a[q * m + p] = 0.0;
        for (std::size_t r = 0; r < m; ++r) {
          const double vrp = V[r * m + p], vrq = V[r * m + q];
          V[r * m + p] = c * vrp - s * vrq;
          V[r * m + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  std::size_t best = 0;
  for (std::size_t i = 1; i < m; ++i) {
    if (a[i * m + i] > a[best * m + best]) best = i;
  }
  vec.resize(m);
  for (std::size_t r = 0; r < m; ++r) vec[r] = V[r * m + best];
  return a[best * m + best];
}

/// Double-centred distances of the rows `s` (k of them) with uniform weights: the k x k Gram
/// matrix of the rows minus their mean, B = -1/2 J Dist J with J = I - 11'/k.
inline void centred_gram(const double* dist, std::size_t n, const std::size_t* s,
                         std::size_t k, std::vector<double>& b, std::vector<double>& r) {
  b.resize(k * k);
  r.assign(k, 0.0);
  double tot = 0.0;
  for (std::size_t i = 0; i < k; ++i) {
    double acc = 0.0;
    for (std::size_t j = 0; j < k; ++j) acc += dist[s[i] * n + s[j]];
    r[i] = acc / static_cast<double>(k);
    tot += r[i];
  }
  tot /= static_cast<double>(k);
  for (std::size_t i = 0; i < k; ++i) {
    for (std::size_t j = 0; j < k; ++j) {
      b[i * k + j] = -0.5 * (dist[s[i] * n + s[j]] - r[i] - r[j] + tot);
    }
  }
}

/// The k nearest rows of each row i (i first, then by distance, ties to the lower index): a
/// candidate subset per row, for the initial upper bound of a search.
inline std::vector<std::vector<std::size_t>> nearest_sets(const double* dist,
                                                          const unsigned char* bad,
                                                          std::size_t n, std::size_t k) {
  std::vector<std::vector<std::size_t>> sets;
  std::vector<double> key(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (bad[i]) continue;
    for (std::size_t j = 0; j < n; ++j) key[j] = dist[i * n + j];
    key[i] = -1.0;
    auto order = detail::order_by(key, bad);
    order.resize(k);
    std::sort(order.begin(), order.end());
    sets.push_back(std::move(order));
  }
  return sets;
}

/// Depth-first search over the k-subsets of 0..n-1 in lexicographic order, with exact pruning.
/// `step(s, t, c, st)` returns the lower bound of every completion of the prefix s[0..t) + {c}
/// (updating the per-depth state st[t + 1] from st[t]); `leaf(s)` the value of a full subset.
/// A prefix is cut when its bound exceeds `upper` (the value of some subset) or reaches the best
/// value found so far, so the result is the first subset (in lexicographic order) with the
/// least value: what a full enumeration keeping strict improvements returns. Returns false
/// when no subset has a finite value below +inf.
template <typename State, typename Step, typename Leaf>
bool search(std::size_t n, std::size_t k, double upper, Step&& step, Leaf&& leaf,
            std::vector<State>& st, std::vector<std::size_t>& out) {
  std::vector<std::size_t> s(k);
  double best = kInf;
  bool found = false;
  std::size_t t = 0, cand = 0;
  while (true) {
    if (cand + k > n + t) {  // no room left for the rest of the subset at depth t
      if (t == 0) break;
      --t;
      cand = s[t] + 1;
      continue;
    }
    const double lb = step(s.data(), t, cand, st);
    if (lb > upper || lb >= best) {
      ++cand;
      continue;
    }
    s[t] = cand;
    if (t + 1 == k) {
      const double val = leaf(s.data(), st);
      if (val < best) {
        best = val;
        found = true;
        out = s;
      }
      ++cand;
      continue;
    }
    ++t;
    cand = s[t - 1] + 1;
  }
  return found;
}

/// Rows 0..k-1: the subset of every rule when no subset avoids the non-finite rows.
inline std::vector<std::size_t> first_subset(std::size_t k) {
  std::vector<std::size_t> s(k);
  std::iota(s.begin(), s.end(), std::size_t{0});
  return s;
}

/// out = sum_i c_i x_i / csum over the rows with c_i > 0 (index order, in double).
template <typename T>
void weighted_mean(MatrixView<T> x, const std::vector<double>& c, double csum, T* out,
                   int threads) {
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < x.n; ++i) {
    if (c[i] > 0.0) rows.push_back(i);
  }
  parallel_for(x.d, threads, grain_for(rows.size() * sizeof(T) + 1),
               [&](std::size_t lo, std::size_t hi) {
                 std::vector<double> acc(hi - lo, 0.0);
                 for (std::size_t i : rows) {
                   const T* r = x.row(i);
                   const double ci = c[i];
                   for (std::size_t j = lo; j < hi; ++j) {
                     acc[j - lo] += ci * static_cast<double>(r[j]);
                   }
                 }
                 for (std::size_t j = lo; j < hi; ++j) out[j] = static_cast<T>(acc[j - lo] / csum);
               });
}

}  // namespace subset_detail

/// \brief MDA, minimum-diameter averaging (El Mhamdi et al. 2020): the mean of the n - f rows
/// whose largest pairwise distance is the least. Ties: the first such subset in lexicographic
/// order of row indices (ByzFL's enumeration keeping strict improvements).
/// \tparam T float or double.
/// \param[in] x (n, D), 0 <= f, 2f < n, C(n, f) <= kMaxSubsets.
/// \param[out] out (D,) the mean (in double, set_means) of the selected rows.
/// \param[out] chosen the n - f selected row indices, ascending.
/// NaN policy: a row with a non-finite entry is at infinite distance, so with at most f of them
/// the selected rows are finite; with more, every diameter is infinite and rows 0..n-f-1 are
/// averaged. Cost: one pass for the distances (O(n^2 D)), a branch-and-bound search over the
/// C(n, f) subsets (worst case O(C(n, f) (n - f)^2) distance look-ups, cut by the incumbent
/// diameter), one pass over the n - f rows. Serial search; bit-identical for any thread count.
template <typename T>
void mda(MatrixView<T> x, std::size_t f, T* out, std::vector<std::size_t>& chosen,
         int threads) {
  detail::check_matrix(x);
  subset_detail::check_subset_args(x.n, f, "mda");
  const std::size_t n = x.n, k = n - f;
  if (f == 0) {
    chosen = subset_detail::first_subset(k);
    detail::set_means(x, {chosen}, out, threads);
    return;
  }
  std::vector<double> dist(n * n);
  std::vector<unsigned char> bad(n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // order only
  auto diameter = [&](const std::vector<std::size_t>& s) {
    double m = 0.0;
    for (std::size_t a = 0; a < s.size(); ++a) {
      for (std::size_t b = a + 1; b < s.size(); ++b) m = std::max(m, dist[s[a] * n + s[b]]);
    }
    return m;
  };
  double upper = subset_detail::kInf;
  for (const auto& s : subset_detail::nearest_sets(dist.data(), bad.data(), n, k)) {
    upper = std::min(upper, diameter(s));
  }
  std::vector<double> st(k + 1, 0.0);  // st[t]: diameter of the prefix of length t
  const bool found =
      upper < subset_detail::kInf &&
      subset_detail::search<double>(
          n, k, upper,
          [&](const std::size_t* s, std::size_t t, std::size_t c, std::vector<double>& dm) {
            double m = dm[t];
            for (std::size_t i = 0; i < t; ++i) m = std::max(m, dist[s[i] * n + c]);
            dm[t + 1] = m;
            return m;
          },
          [&](const std::size_t*, std::vector<double>& dm) { return dm[k]; }, st, chosen);
  if (!found) chosen = subset_detail::first_subset(k);
  detail::set_means(x, {chosen}, out, threads);
}

/// \brief SMEA, smallest maximum eigenvalue averaging (Allouah et al. 2023): the mean of the
/// n - f rows whose empirical covariance (1 / (n - f) normalisation) has the least largest
/// eigenvalue. The eigenvalue is exact (to rounding): that of the (n - f) x (n - f) double-
/// centred distance matrix of the subset, never a D x D matrix. Ties: the first such subset in
/// lexicographic order.
/// \param[in] x (n, D), 0 <= f, 2f < n, C(n, f) <= kMaxSubsets.
/// \param[out] out (D,). \param[out] chosen the selected rows, ascending.
/// NaN policy as mda. Cost: one pass for the distances (O(n^2 D)), a search over the C(n, f)
/// subsets at O((n - f)^3) each (worst case), cut by exact lower bounds of every completion of a
/// prefix (its squared diameter / (2 (n - f)) and its scatter trace / ((n - f - 1)(n - f)),
/// with a relative margin for rounding), one pass over the n - f rows.
template <typename T>
void smea(MatrixView<T> x, std::size_t f, T* out, std::vector<std::size_t>& chosen,
          int threads) {
  detail::check_matrix(x);
  subset_detail::check_subset_args(x.n, f, "smea");
  const std::size_t n = x.n, k = n - f;
  if (f == 0) {
    chosen = subset_detail::first_subset(k);
    detail::set_means(x, {chosen}, out, threads);
    return;
  }
  std::vector<double> dist(n * n);
  std::vector<unsigned char> bad(n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // order only
  std::vector<double> b, r, dd, ee, vv, pp;
  const double kd = static_cast<double>(k);
  auto value = [&](const std::size_t* s) {
    for (std::size_t i = 0; i < k; ++i) {
      if (bad[s[i]]) return subset_detail::kInf;
    }
    subset_detail::centred_gram(dist.data(), n, s, k, b, r);
    const int e = subset_detail::normaliser(b);
    subset_detail::scale_by(b, e);
    return std::ldexp(subset_detail::largest_eigenvalue(b, k, dd, ee, vv, pp), -e) / kd;
  };
  double upper = subset_detail::kInf;
  for (const auto& s : subset_detail::nearest_sets(dist.data(), bad.data(), n, k)) {
    upper = std::min(upper, value(s.data()));
  }
  // Rounding margin of the bounds against a computed eigenvalue (a few k^2 ulps).
  const double margin = 1.0 - 1e-9 - 64.0 * kd * kd * std::numeric_limits<double>::epsilon();
  struct Prefix {
    double diam = 0.0, pairs = 0.0;  // largest and summed squared distances of the prefix
  };
  std::vector<Prefix> st(k + 1);
  const bool found =
      upper < subset_detail::kInf &&
      subset_detail::search<Prefix>(
          n, k, upper,
          [&](const std::size_t* s, std::size_t t, std::size_t c, std::vector<Prefix>& ps) {
            Prefix q = ps[t];
            for (std::size_t i = 0; i < t; ++i) {
              const double dij = dist[s[i] * n + c];
              q.diam = std::max(q.diam, dij);
              q.pairs += dij;
            }
            ps[t + 1] = q;
            // scatter(S) >= scatter(prefix) (Loewner order), so
            //   lambda_max(S) k >= max(diam / 2, trace(prefix) / (k - 1)),
            //   trace(prefix) = pairs / (t + 1).
            double lb = q.diam / (2.0 * kd);
            if (k > 1) lb = std::max(lb, q.pairs / (static_cast<double>(t + 1) * (kd - 1.0) * kd));
            return lb * margin;
          },
          [&](const std::size_t* s, std::vector<Prefix>&) { return value(s); }, st, chosen);
  if (!found) chosen = subset_detail::first_subset(k);
  detail::set_means(x, {chosen}, out, threads);
}

/// \brief CAF, the covariance-bound agnostic filter (Allouah, Guerraoui and Stephan 2025), with
/// ByzFL 0.0.11's iteration and stopping rule: weights c = 1; while sum(c) > n - 2f: mu = the
/// c-weighted mean, (lambda, v) the top eigenpair of the c-weighted covariance, tau_i =
/// ((x_i - mu) . v)^2 over all rows, c_i *= 1 - tau_i / max tau; the result is the mu of the
/// least lambda met (strictly least: the first on ties). ByzFL runs one power step from a
/// random vector; here the eigenpair is exact (Jacobi on the n x n weighted double-centred
/// distance matrix, ties between equal eigenvalues to the lowest row position), so the result
/// is deterministic. The loop also ends when a step removes no weight (a zero covariance, or no
/// progress in floating point), or after `max_iter` steps; with f = 0 (no step runs) the result
/// is the mean.
/// \param[in] x (n, D), 0 <= f, 2f < n. \param[out] out (D,).
/// \param[out] iters the number of steps run.
/// NaN policy: a row with a non-finite entry starts with weight 0 (it never enters a mean nor a
/// covariance, and its tau is not counted), so with at most f such rows the result is finite.
/// When every row is non-finite the plain mean is returned. Cost: one pass for the distances,
/// O(n^3) per step (no work per coordinate), one weighted pass over the rows.
template <typename T>
void caf(MatrixView<T> x, std::size_t f, std::size_t max_iter, T* out, std::size_t& iters,
         int threads) {
  detail::check_matrix(x);
  require(2 * f < x.n, "caf needs 0 <= f and 2f < n");
  const std::size_t n = x.n;
  iters = 0;
  std::vector<double> dist(n * n);
  std::vector<unsigned char> bad(n);
  detail::pairwise_sq_distances_scaled(x, dist.data(), bad.data(), threads);  // shape only
  std::vector<std::size_t> g;  // the finite rows
  for (std::size_t i = 0; i < n; ++i) {
    if (!bad[i]) g.push_back(i);
  }
  if (g.empty()) {
    detail::set_means(x, {subset_detail::first_subset(n)}, out, threads);
    return;
  }
  const std::size_t m = g.size();
  std::vector<double> c(n, 0.0);
  for (std::size_t i : g) c[i] = 1.0;
  double csum = static_cast<double>(m);
  std::vector<double> best_c = c;
  double best_sum = csum, best_val = subset_detail::kInf;
  const double floor_sum = static_cast<double>(n - 2 * f);
  std::vector<double> a(m), r(m), gd(m * m), mm, u, V, w(m), tau(m);
  std::vector<std::size_t> act;
  while (csum > floor_sum && iters < max_iter) {
    ++iters;
    for (std::size_t i = 0; i < m; ++i) a[i] = c[g[i]] / csum;
    double s = 0.0;
    for (std::size_t i = 0; i < m; ++i) {
      double acc = 0.0;
      for (std::size_t j = 0; j < m; ++j) {
        if (a[j] > 0.0) acc += a[j] * dist[g[i] * n + g[j]];
      }
      r[i] = acc;
      if (a[i] > 0.0) s += a[i] * acc;
    }
    // Gram matrix of the rows minus mu, and the weighted covariance in row space:
    // Sigma_c = Y' diag(a) Y has the nonzero eigenvalues of diag(sqrt a) Y Y' diag(sqrt a),
    // whose rows and columns of weight 0 are zero (left out: `act` are the others).
    act.clear();
    for (std::size_t i = 0; i < m; ++i) {
      if (a[i] > 0.0) act.push_back(i);
    }
    const std::size_t q = act.size();
    for (std::size_t i = 0; i < m; ++i) {
      for (std::size_t j = 0; j < m; ++j) {
        gd[i * m + j] = -0.5 * (dist[g[i] * n + g[j]] - r[i] - r[j] + s);
      }
    }
    mm.resize(q * q);
    for (std::size_t i = 0; i < q; ++i) {
      for (std::size_t j = 0; j < q; ++j) {
        mm[i * q + j] = std::sqrt(a[act[i]]) * gd[act[i] * m + act[j]] * std::sqrt(a[act[j]]);
      }
    }
    const int em = subset_detail::normaliser(mm);
    subset_detail::scale_by(mm, em);
    const double lambda = std::ldexp(subset_detail::top_eigenpair(mm, q, u, V), -em);
    subset_detail::scale_by(gd, subset_detail::normaliser(gd));  // tau / max tau: scale-free
    if (lambda < best_val) {
      best_val = lambda;
      best_c = c;
      best_sum = csum;
    }
    // (x_i - mu) . v = (Y Y' diag(sqrt a) u)_i / sqrt(lambda); the scale cancels in tau / max.
    std::fill(w.begin(), w.end(), 0.0);
    for (std::size_t i = 0; i < q; ++i) w[act[i]] = std::sqrt(a[act[i]]) * u[i];
    double tmax = 0.0;
    for (std::size_t i = 0; i < m; ++i) {
      double acc = 0.0;
      for (std::size_t j = 0; j < m; ++j) {
        if (w[j] != 0.0) acc += gd[i * m + j] * w[j];
      }
      tau[i] = acc * acc;
      tmax = std::max(tmax, tau[i]);
    }
    if (!(tmax > 0.0) || !(lambda > 0.0)) break;  // zero covariance: mu is exact
    double next = 0.0;
    for (std::size_t i = 0; i < m; ++i) {
      c[g[i]] *= 1.0 - tau[i] / tmax;
      next += c[g[i]];
    }
    if (!(next < csum)) break;
    csum = next;
  }
  subset_detail::weighted_mean(x, best_c, best_sum, out, threads);
}

}  // namespace cyclad::kernels
