#!/usr/bin/env python3
"""Durability estimate for Vault's layouts (issue 19): the probability that
one file is lost within one year, for the classic four-node layout and for
Reed-Solomon RS(2,2), RS(4,2) and RS(10,4).

Model (see docs/durability.md):

* Every node fails independently; time to failure is exponential with rate
  lambda = -ln(1 - AFR) per year, so a node that were never repaired would
  fail within a year with probability exactly AFR.
* A failure destroys the node's stored data (a disk or machine lost, not a
  reboot). Each failed node is rebuilt independently (`vault-client repair`
  rebuilds a node in one pass, and failed nodes are repaired in parallel);
  time to repair is exponential with mean MTTR, rate mu = 1/MTTR.
* A file is lost as soon as the failed nodes hold too few pieces of it:
  classic: two neighbouring nodes of the ring 0-1-2-3-0 (both copies of one
  part), or any three; RS(K,M): more than M of its K+M nodes.
* Every file starts the year with all of its nodes healthy.

Methods, cross-checked against each other:

1. Transient analysis of the continuous-time Markov chain by uniformisation:
   P(loss by T) = sum_k Poisson(k; Lambda*T) * (e0 P^k)[lost], P = I + Q/Lambda.
   Every term is non-negative, so tiny probabilities (1e-15) keep their
   relative precision. This is the figure reported.
2. The mean time to data loss (MTTDL) of the same chain, solved by state
   reduction with GTH-style diagonals (no subtractions), and
   1 - exp(-T/MTTDL).
3. The textbook closed form (rare-failure approximation):
   RS(K,M), n = K+M: MTTDL ~ M! mu^M / (lambda^(M+1) n(n-1)...(n-M));
   classic: MTTDL ~ mu / (8 lambda^2) (one failure at 4 lambda, then one of
   the two neighbours at 2 lambda before the repair).
4. A seeded Monte Carlo simulation with an independent clock per node (not
   derived from the chain), at a deliberately bad parameter set (default
   AFR 50%, MTTR 30 days) where losses are frequent enough to count.

Python 3, standard library only.
"""

import argparse
import heapq
import math
import random
import sys
import time

HOURS_PER_YEAR = 365.25 * 24.0


# --------------------------------------------------------------------------
# Layouts


class Layout:
    """A layout: n nodes hold a file; `lost(down)` says whether the set of
    failed nodes (a bitmask over 0..n-1) has destroyed the file."""

    def __init__(self, name, n, overhead, tolerates, lost, closed_form, lag):
        self.name = name
        # Mean time, in repair times, for the chain started with every node
        # healthy to settle into its quasi-stationary state: the loss
        # probability over T is 1 - exp(-(T - lag*MTTR)/MTTDL), not
        # 1 - exp(-T/MTTDL). H_M = 1 + 1/2 + ... + 1/M for RS (M failures
        # must be present, repaired in parallel); 1 for classic.
        self.lag = lag
        self.n = n
        self.overhead = overhead
        self.tolerates = tolerates
        self.lost = lost
        self.closed_form = closed_form  # (lam, mu) -> approximate MTTDL


def classic():
    n = 4

    def lost(down):
        # Part p lives on nodes p and p-1 (mod 4) after the per-file rotation,
        # so a part loses both copies iff two ring neighbours are down.
        for i in range(n):
            if down >> i & 1 and down >> ((i + 1) % n) & 1:
                return True
        return False

    return Layout(
        "classic",
        n,
        2.0,
        "any 1; 2 if opposite",
        lost,
        lambda lam, mu: mu / (8.0 * lam * lam),
        1.0,
    )


def rs(k, m):
    n = k + m

    def lost(down):
        return bin(down).count("1") > m

    def closed_form(lam, mu):
        denom = lam ** (m + 1)
        for i in range(m + 1):
            denom *= n - i
        return math.factorial(m) * mu**m / denom

    return Layout(
        "RS(%d,%d)" % (k, m),
        n,
        n / k,
        "any %d" % m,
        lost,
        closed_form,
        sum(1.0 / i for i in range(1, m + 1)),
    )


LAYOUTS = [classic(), rs(2, 2), rs(4, 2), rs(10, 4)]


# --------------------------------------------------------------------------
# The Markov chain


def chain(layout, lam, mu):
    """Build the chain: returns (rates, absorbing), where rates[i] is a dict
    {j: rate} of transitions out of transient state i, state 0 is "all
    healthy", and state `absorbing` (= number of transient states) is "lost".

    Classic: the state is the exact set of failed nodes (adjacency matters):
    the empty set, four singletons and the two opposite pairs. RS: the
    number of failed nodes 0..M (all sets of one size are equivalent, and
    the 2^14 sets of RS(10,4) lump exactly into 5 states)."""
    n = layout.n
    if layout.name == "classic":
        states = [s for s in range(1 << n) if not layout.lost(s)]
        states.sort(key=lambda s: (bin(s).count("1"), s))
        index = {s: i for i, s in enumerate(states)}
        absorbing = len(states)
        rates = []
        for s in states:
            out = {}
            for node in range(n):
                if s >> node & 1:
                    t = s & ~(1 << node)  # this node repaired
                    out[index[t]] = out.get(index[t], 0.0) + mu
                else:
                    t = s | (1 << node)  # this node fails
                    j = absorbing if layout.lost(t) else index[t]
                    out[j] = out.get(j, 0.0) + lam
            rates.append(out)
        return rates, absorbing
    # RS(K,M): birth-death on the number of failed nodes.
    m = next(f for f in range(n + 1) if layout.lost((1 << f) - 1)) - 1
    absorbing = m + 1
    rates = []
    for i in range(m + 1):
        out = {i + 1: (n - i) * lam}
        if i > 0:
            out[i - 1] = i * mu
        rates.append(out)
    return rates, absorbing


def p_loss_uniformisation(rates, absorbing, years):
    """P(absorbed by `years`) from state 0, by uniformisation."""
    size = absorbing + 1
    exit_rate = [sum(r.values()) for r in rates]
    big = max(exit_rate)
    # Uniformised DTMC: P = I + Q/big, as sparse rows; diagonal computed
    # as 1 - exit/big (non-negative since big >= exit).
    rows = []
    for i, r in enumerate(rates):
        row = [(j, q / big) for j, q in r.items()]
        row.append((i, 1.0 - exit_rate[i] / big))
        rows.append(row)
    a = big * years
    kmax = int(a + 12.0 * math.sqrt(a) + 40)
    v = [0.0] * size
    v[0] = 1.0
    total = 0.0
    log_a = math.log(a)
    for k in range(kmax + 1):
        logw = -a + k * log_a - math.lgamma(k + 1)
        if logw > -745.0:
            total += math.exp(logw) * v[absorbing]
        nv = [0.0] * size
        nv[absorbing] = v[absorbing]
        for i, row in enumerate(rows):
            vi = v[i]
            if vi:
                for j, p in row:
                    nv[j] += vi * p
        v = nv
    return total


def p_loss_expm(rates, absorbing, years):
    """P(absorbed by `years`) from state 0, as entry [0][lost] of
    exp(Q*years): Taylor series of degree 24 on Q*years/2^s with
    ||Q*years/2^s|| <= 1/2, then s squarings (dense lists; the chains have
    at most 8 states). An independent check on the uniformisation."""
    size = absorbing + 1
    q = [[0.0] * size for _ in range(size)]
    for i, r in enumerate(rates):
        for j, rate in r.items():
            q[i][j] += rate
            q[i][i] -= rate
    norm = max(sum(abs(x) for x in row) for row in q) * years
    s = max(0, int(math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0)
    h = years / 2.0**s
    a = [[x * h for x in row] for row in q]

    def mul(x, y):
        return [
            [sum(x[i][k] * y[k][j] for k in range(size)) for j in range(size)]
            for i in range(size)
        ]

    e = [[1.0 if i == j else 0.0 for j in range(size)] for i in range(size)]
    term = [row[:] for row in e]
    for k in range(1, 25):
        term = mul(term, a)
        term = [[x / k for x in row] for row in term]
        e = [[e[i][j] + term[i][j] for j in range(size)] for i in range(size)]
    for _ in range(s):
        e = mul(e, e)
    return e[0][absorbing]


def mttdl(rates, absorbing):
    """Mean time to absorption from state 0, by state reduction.

    Solves q_i t_i = 1 + sum_j q_ij t_j (t_absorbing = 0) by eliminating
    states from the last to state 1; each diagonal is recomputed as the sum
    of the remaining outgoing rates (Grassmann-Taksar-Heyman), so there is no
    cancellation even when absorption is 1e15 times rarer than repair."""
    q = [dict(r) for r in rates]
    c = [1.0] * len(rates)
    for k in range(len(rates) - 1, 0, -1):
        qk = sum(rate for j, rate in q[k].items())
        for i in range(k):
            qik = q[i].pop(k, 0.0)
            if not qik:
                continue
            f = qik / qk
            c[i] += f * c[k]
            for j, qkj in q[k].items():
                if j != i:
                    q[i][j] = q[i].get(j, 0.0) + f * qkj
                # j == i is a self-loop: dropped, since the exit rate
                # below is summed over j != i.
    return c[0] / sum(q[0].values())


# --------------------------------------------------------------------------
# Monte Carlo


def simulate(layout, lam, mttr_years, trials, rng, repair="exp", years=1.0):
    """Number of `trials` independent runs of `years` (all nodes healthy at
    the start) in which the file is lost. Each node has its own clock: time
    to failure ~ Exp(lam); repair time ~ Exp(mean MTTR) or fixed MTTR."""
    n = layout.n
    lost_fn = layout.lost
    expo = rng.expovariate
    lost = 0
    for _ in range(trials):
        heap = [(expo(lam), i) for i in range(n)]
        heapq.heapify(heap)
        down = 0
        while True:
            t, i = heap[0]
            if t >= years:
                break
            bit = 1 << i
            if down & bit:
                down &= ~bit
                heapq.heapreplace(heap, (t + expo(lam), i))
            else:
                down |= bit
                if lost_fn(down):
                    lost += 1
                    break
                d = mttr_years if repair == "fixed" else expo(1.0 / mttr_years)
                heapq.heapreplace(heap, (t + d, i))
    return lost


# --------------------------------------------------------------------------
# Output


def nines(p):
    return -math.log10(p) if p > 0 else float("inf")


def fmt_years(y):
    return "%.3g" % y


def rates_for(afr, mttr_hours):
    if not 0.0 < afr < 1.0:
        sys.exit("AFR must be in (0, 1), got %r" % afr)
    if mttr_hours <= 0:
        sys.exit("MTTR must be positive, got %r" % mttr_hours)
    lam = -math.log1p(-afr)
    mttr_years = mttr_hours / HOURS_PER_YEAR
    return lam, 1.0 / mttr_years, mttr_years


def floats(text):
    return [float(x) for x in text.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--afr",
        type=floats,
        default=[0.02, 0.05, 0.10],
        help="node annual failure rates, comma-separated fractions "
        "(default 0.02,0.05,0.10)",
    )
    ap.add_argument(
        "--mttr-hours",
        type=floats,
        default=[24.0, 168.0],
        help="mean time to repair one failed node, hours, comma-separated "
        "(default 24,168)",
    )
    ap.add_argument("--years", type=float, default=1.0, help="horizon (default 1)")
    ap.add_argument("--seed", type=int, default=19, help="Monte Carlo seed (default 19)")
    ap.add_argument(
        "--mc-years",
        type=int,
        default=500000,
        help="Monte Carlo: simulated one-year runs (file-years) per layout "
        "(default 500000; 0 skips the simulation)",
    )
    ap.add_argument("--mc-afr", type=float, default=0.5, help="Monte Carlo AFR (default 0.5)")
    ap.add_argument(
        "--mc-mttr-hours",
        type=float,
        default=720.0,
        help="Monte Carlo MTTR in hours (default 720 = 30 days)",
    )
    ap.add_argument(
        "--mc-repair",
        choices=["exp", "fixed"],
        default="exp",
        help="Monte Carlo repair time: exponential as in the chain "
        "(default), or fixed at the MTTR (a sensitivity check)",
    )
    args = ap.parse_args()
    started = time.time()
    T = args.years

    print("Probability that one file is lost within %g year(s)" % T)
    print(
        "lambda = -ln(1-AFR) per node-year; repair ~ Exp(1/MTTR) per failed "
        "node, in parallel; figures from uniformisation of the CTMC"
    )
    print(
        "check: largest relative gap, over the four layouts, between the "
        "uniformisation and (a) the matrix exponential, (b) "
        "1-exp(-(T-H*MTTR)/MTTDL), H = time to reach the quasi-stationary "
        "state in repair times (1 classic, 1.5 for M=2, 2.08 for M=4)"
    )
    worst = [0.0, 0.0]
    for afr in args.afr:
        for mttr_h in args.mttr_hours:
            lam, mu, mttr_years = rates_for(afr, mttr_h)
            print()
            print(
                "AFR %g%%, MTTR %g h (lambda %.4g/yr, mu %.4g/yr)"
                % (afr * 100, mttr_h, lam, mu)
            )
            print(
                "  %-8s %5s %8s  %-21s %11s %6s %11s %11s"
                % (
                    "layout",
                    "nodes",
                    "overhead",
                    "nodes lost tolerated",
                    "P(loss/yr)" if T == 1 else "P(loss)",
                    "nines",
                    "MTTDL (yr)",
                    "closed form",
                )
            )
            gaps = [0.0, 0.0]
            for lay in LAYOUTS:
                rates, absorbing = chain(lay, lam, mu)
                p = p_loss_uniformisation(rates, absorbing, T)
                p_expm = p_loss_expm(rates, absorbing, T)
                m = mttdl(rates, absorbing)
                p_mttdl = -math.expm1(-(T - lay.lag * mttr_years) / m)
                gaps[0] = max(gaps[0], abs(p - p_expm) / p)
                gaps[1] = max(gaps[1], abs(p - p_mttdl) / p)
                print(
                    "  %-8s %5d %7.2gx  %-21s %11.3g %6.1f %11s %11s"
                    % (
                        lay.name,
                        lay.n,
                        lay.overhead,
                        lay.tolerates,
                        p,
                        nines(p),
                        fmt_years(m),
                        fmt_years(lay.closed_form(lam, mu)),
                    )
                )
            print("  check: (a) %.1g (b) %.1g" % tuple(gaps))
            worst = [max(w, g) for w, g in zip(worst, gaps)]

    if args.mc_years > 0:
        lam, mu, mttr_years = rates_for(args.mc_afr, args.mc_mttr_hours)
        print()
        print(
            "Monte Carlo cross-check: AFR %g%%, MTTR %g h, %d runs of %g "
            "year(s) per layout, seed %d, %s repair times"
            % (
                args.mc_afr * 100,
                args.mc_mttr_hours,
                args.mc_years,
                T,
                args.seed,
                "exponential" if args.mc_repair == "exp" else "fixed",
            )
        )
        print(
            "  %-8s %11s %11s %10s %7s"
            % ("layout", "Markov", "simulated", "+/- 95%", "z")
        )
        rng = random.Random(args.seed)
        for lay in LAYOUTS:
            rates, absorbing = chain(lay, lam, mu)
            p = p_loss_uniformisation(rates, absorbing, T)
            hits = simulate(
                lay, lam, mttr_years, args.mc_years, rng, args.mc_repair, T
            )
            est = hits / args.mc_years
            se = math.sqrt(p * (1 - p) / args.mc_years)
            print(
                "  %-8s %11.4g %11.4g %10.2g %7.2f"
                % (lay.name, p, est, 1.96 * se, (est - p) / se)
            )
        if args.mc_repair == "exp":
            print("  (z = (simulated - Markov) / standard error; |z| < 3 expected)")
        else:
            print(
                "  (z = (simulated - Markov) / standard error; the chain "
                "assumes exponential repairs, so z shows the sensitivity)"
            )
    print()
    print(
        "largest gaps: (a) %.1g (b) %.1g; %.1f s"
        % (worst[0], worst[1], time.time() - started)
    )


if __name__ == "__main__":
    main()
