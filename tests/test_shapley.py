"""Tests for helpers.shapley against brute-force permutation averages, axioms and Taylor expansions."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

jax.config.update("jax_enable_x64", True)

from helpers import shapley  # noqa: E402


def random_game(n, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=2**n)
    v[0] = 0.0
    return v


def bits(players):
    return int(sum(1 << i for i in players))


def brute_shapley(v, n, orders=None):
    """Average marginal contributions over all (or the given) orderings of the players."""
    orders = list(itertools.permutations(range(n))) if orders is None else orders
    phi = np.zeros(n)
    for order in orders:
        s = 0
        for i in order:
            phi[i] += v[s | (1 << i)] - v[s]
            s |= 1 << i
    return phi / len(orders)


def consistent(order, levels):
    """True if every block of every level is contiguous in the ordering."""
    for lev in levels:
        seq = [lev[i] for i in order]
        seen, prev = set(), None
        for b in seq:
            if b != prev and b in seen:
                return False
            seen.add(b)
            prev = b
    return True


# --- Moebius transform --------------------------------------------------------------------


def test_mobius_matches_definition_and_inverts():
    n = 5
    v = random_game(n, 0)
    m = shapley.mobius(v)
    for T in range(2**n):
        ref = sum((-1) ** (bin(T).count("1") - bin(S).count("1")) * v[S] for S in range(2**n) if S & T == S)
        assert m[T] == pytest.approx(ref, abs=1e-12)
    np.testing.assert_allclose(shapley.zeta(m), v, atol=1e-12)


def test_mass_by_order_sums_to_grand_value_and_detects_pure_pairs():
    n = 6
    v = random_game(n, 1)
    mass = shapley.mass_by_order(shapley.mobius(v))
    assert mass.sum() == pytest.approx(v[-1] - v[0])
    # a quadratic game (pairwise only) has no dividends above order 2
    rng = np.random.default_rng(2)
    a, B = rng.normal(size=n), rng.normal(size=(n, n))
    masks = shapley.coalition_masks(n).astype(float)
    q = masks @ a + np.einsum("si,ij,sj->s", masks, B, masks)
    mq = shapley.mass_by_order(shapley.mobius(q), absolute=True)
    assert np.all(mq[3:] < 1e-10) and mq[2] > 1e-3


# --- Shapley axioms ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shapley_matches_permutations_and_marginal_formula(seed):
    n = 5
    v = random_game(n, seed)
    phi = shapley.shapley_values(v)
    np.testing.assert_allclose(phi, brute_shapley(v, n), atol=1e-12)
    np.testing.assert_allclose(phi, shapley.shapley_from_marginals(v), atol=1e-12)


def test_shapley_axioms():
    n = 6
    v, w = random_game(n, 3), random_game(n, 4)
    phi = shapley.shapley_values(v)
    assert phi.sum() == pytest.approx(v[-1] - v[0])  # efficiency
    np.testing.assert_allclose(shapley.shapley_values(v + w), phi + shapley.shapley_values(w), atol=1e-12)  # additivity
    # null player: player 2 adds nothing anywhere
    masks = shapley.coalition_masks(n)
    s = np.arange(2**n)
    null = v.copy()
    null[masks[:, 2]] = v[s[masks[:, 2]] & ~(1 << 2)]
    assert shapley.shapley_values(null)[2] == pytest.approx(0.0, abs=1e-12)
    # symmetry: a game symmetric in players 0 and 1 gives them equal values
    swap = s.copy()
    b0, b1 = (s >> 0) & 1, (s >> 1) & 1
    swap = (s & ~3) | (b0 << 1) | b1
    sym = 0.5 * (v + v[swap])
    phis = shapley.shapley_values(sym)
    assert phis[0] == pytest.approx(phis[1], abs=1e-12)


# --- Owen / Winter values ------------------------------------------------------------------


def test_trivial_tree_gives_shapley():
    n = 5
    v = random_game(n, 5)
    np.testing.assert_allclose(shapley.winter_values(v, []), shapley.shapley_values(v), atol=1e-12)
    np.testing.assert_allclose(shapley.owen_values(v, np.zeros(n, int)), shapley.shapley_values(v), atol=1e-12)
    np.testing.assert_allclose(shapley.owen_values(v, np.arange(n)), shapley.shapley_values(v), atol=1e-12)


@pytest.mark.parametrize("partition", [[0, 0, 1, 1, 1], [0, 1, 0, 2, 2], [1, 1, 1, 1, 0]])
def test_owen_matches_brute_force(partition):
    n = 5
    v = random_game(n, 6)
    levels = [np.array(partition)]
    orders = [o for o in itertools.permutations(range(n)) if consistent(o, levels)]
    np.testing.assert_allclose(shapley.owen_values(v, partition), brute_shapley(v, n, orders), atol=1e-12)


def test_winter_matches_brute_force_and_is_efficient_at_every_level():
    n = 6
    v = random_game(n, 7)
    levels = [np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 2, 3])]
    orders = [o for o in itertools.permutations(range(n)) if consistent(o, levels)]
    phi = shapley.winter_values(v, levels)
    np.testing.assert_allclose(phi, brute_shapley(v, n, orders), atol=1e-12)
    assert phi.sum() == pytest.approx(v[-1] - v[0])
    # at each level, block totals equal the Winter value of the quotient game of those blocks
    top = levels[0]
    q = shapley.quotient_game(v, top)
    np.testing.assert_allclose([phi[top == b].sum() for b in range(2)], shapley.shapley_values(q), atol=1e-12)
    mid = levels[1]
    qm = shapley.quotient_game(v, mid)
    np.testing.assert_allclose(
        [phi[mid == b].sum() for b in range(4)], shapley.owen_values(qm, np.array([0, 0, 1, 1])), atol=1e-12
    )


def test_mass_by_level_partitions_the_dividends():
    n = 6
    v = random_game(n, 8)
    m = shapley.mobius(v)
    levels = [np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 2, 2, 3])]
    mass = shapley.mass_by_level(m, levels)
    assert mass.shape == (4,)
    assert mass.sum() == pytest.approx(v[-1])
    assert mass[-1] == pytest.approx(sum(m[1 << i] for i in range(n)))
    # coalitions across the top split: every T touching both {0,1,2} and {3,4,5}
    across = sum(m[T] for T in range(2**n) if T & 0b000111 and T & 0b111000)
    assert mass[0] == pytest.approx(across)
    # the pair {0,1} sits inside block 0 of the finest non-trivial level: depth 2
    assert shapley.level_depths(n, levels)[bits([0, 1])] == 2
    assert shapley.level_depths(n, levels)[bits([0, 2])] == 1


# --- the gradient-step game ----------------------------------------------------------------


def small_model():
    rng = np.random.default_rng(0)
    params = {"w1": jnp.asarray(rng.normal(size=(3, 4))), "w2": jnp.asarray(rng.normal(size=(4, 2)))}
    x = jnp.asarray(rng.normal(size=(7, 3)))
    y = jnp.sin(x[:, :2])

    def loss(p):
        return jnp.mean((jnp.tanh(x @ p["w1"]) @ p["w2"] - y) ** 2)

    labels = shapley.unit_labels(params, {"w1": 1, "w2": 0}, np.array([0, 0, 1, 2]))
    return params, loss, labels, x, y


def test_step_game_matches_direct_evaluation():
    params, loss, labels, _, _ = small_model()
    eta = 0.3
    v = shapley.step_game(loss, params, labels, step_size=eta)
    g = jax.grad(loss)(params)
    S = [0, 2]  # players 0 and 2: units 0, 1, 3
    unit_on = np.array([1.0, 1.0, 0.0, 1.0])
    moved = {"w1": params["w1"] - eta * g["w1"] * unit_on[None, :], "w2": params["w2"] - eta * g["w2"] * unit_on[:, None]}
    assert v[bits(S)] == pytest.approx(float(loss(params) - loss(moved)), rel=1e-10)
    # readout variant
    r = lambda p: p["w2"].sum()
    vr = shapley.step_game(loss, params, labels, step_size=eta, readout=r)
    assert vr[bits(S)] == pytest.approx(float(r(moved) - r(params)), rel=1e-10)


def test_second_order_identity_with_hessian_cross_blocks():
    params, loss, labels, _, _ = small_model()
    gsq, coupling = shapley.gradient_hessian_coupling(loss, params, labels)
    # dense Hessian reference
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    H = np.asarray(jax.jit(jax.hessian(lambda z: loss(unravel(z))))(flat))
    g = np.asarray(jax.grad(lambda z: loss(unravel(z)))(flat))
    lab = np.asarray(ravel_pytree(labels)[0])
    for a in range(3):
        for b in range(3):
            ref = g[lab == a] @ H[np.ix_(lab == a, lab == b)] @ g[lab == b]
            assert coupling[a, b] == pytest.approx(float(ref), rel=1e-8, abs=1e-12)
    errors = []
    for eta in [1e-2, 5e-3]:
        m = shapley.mobius(shapley.step_game(loss, params, labels, step_size=eta))
        pair = m[bits([0, 1])]
        errors.append(abs(pair + eta**2 * coupling[0, 1]))
        single = m[bits([2])]
        assert single == pytest.approx(eta * gsq[2] - 0.5 * eta**2 * coupling[2, 2], rel=1e-3)
    # the remainder is third order: halving eta divides it by about 8
    assert 5.0 < errors[0] / errors[1] < 11.0


def test_similarities_and_tree():
    params, loss, labels, x, y = small_model()
    f = lambda p, xx: jnp.tanh(xx @ p["w1"]) @ p["w2"]
    T = shapley.tangent_similarity(f, params, x, labels)
    np.testing.assert_allclose(np.diag(T), 1.0)
    # independent check of one entry: <K_a, K_b>_F of class-mean tangent kernels
    J = jax.jit(jax.jacrev(lambda p: f(p, x)))(params)
    def K(a):
        m1 = (np.asarray(labels["w1"]) == a)
        m2 = (np.asarray(labels["w2"]) == a)
        Ja = np.concatenate([(np.asarray(J["w1"]) * m1).reshape(7, 2, -1), (np.asarray(J["w2"]) * m2).reshape(7, 2, -1)], -1)
        return np.einsum("xcp,ycp->xy", Ja, Ja) / 2
    K0, K2 = K(0), K(2)
    assert T[0, 2] == pytest.approx(np.sum(K0 * K2) / np.linalg.norm(K0) / np.linalg.norm(K2), rel=1e-8)
    per_example = lambda p, xi, yi: jnp.sum((f(p, xi[None])[0] - yi) ** 2)
    C = shapley.noise_similarity(per_example, params, x, y, labels)
    Hs = shapley.hessian_similarity(loss, params, labels)
    assert C.shape == Hs.shape == (3, 3)
    Z, levels = shapley.player_tree(T, [1, 2, 3])
    assert Z.shape == (2, 4) and len(levels) == 3
    shapley.check_levels(levels, 3)
    assert shapley.partition_agreement(levels[-1], np.arange(3)) == 1.0
    lab = shapley.flat_partition(T, 2, seed=0)
    assert lab.shape == (3,) and set(lab.tolist()) == {0, 1}


# --- errors ------------------------------------------------------------------------------


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="MAX_PLAYERS"):
        shapley.coalition_masks(shapley.MAX_PLAYERS + 1)
    with pytest.raises(ValueError, match="2\\*\\*n"):
        shapley.mobius(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        shapley.shapley_values(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="does not refine"):
        shapley.check_levels([np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2])], 4)
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        shapley.check_levels([np.array([0, 0, 1])], 4)
    with pytest.raises(ValueError, match="own no parameter"):
        shapley.count_players({"w": np.array([0, 2, 2])})
    params, loss, labels, _, _ = small_model()
    with pytest.raises(ValueError, match="step_size"):
        shapley.step_game(loss, params, labels, step_size=-1.0)
    with pytest.raises(ValueError, match="units along axis"):
        shapley.unit_labels(params, {"w1": 1}, np.array([0, 1]))
    with pytest.raises(ValueError, match="not in params"):
        shapley.unit_labels(params, {"w3": 1}, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="cuts"):
        shapley.player_tree(np.eye(3) + 0.1, [2, 1])
    with pytest.raises(TypeError, match="n_players"):
        shapley.coalition_masks(2.0)
    big = {"w": np.arange(shapley.MAX_PLAYERS + 1)}
    with pytest.raises(ValueError, match="MAX_PLAYERS"):
        shapley.count_players(big)


# --- pairwise games: closed form against enumeration ----------------------------------------


def additive_game(n=6, N=5, C=3, seed=0):
    """Players that add their own output changes Delta_a; residual r; squared error over N*C entries."""
    rng = np.random.default_rng(seed)
    r = rng.normal(size=(N, C))
    D = rng.normal(size=(n, N, C))
    masks = shapley.coalition_masks(n).astype(float)
    moved = r[None] + np.einsum("sa,anc->snc", masks, D)
    values = np.mean(r**2) - np.mean(moved**2, axis=(1, 2))  # v(S) = L(r) - L(r + Delta_S), enumerated
    return r, D, values


def test_pairwise_dividends_match_enumerated_moebius():
    n = 6
    r, D, values = additive_game(n)
    m = shapley.mobius(values)
    singles, pairs = shapley.pairwise_dividends(r, D)
    np.testing.assert_allclose(singles, m[1 << np.arange(n)], rtol=1e-12, atol=1e-14)
    for i, j in itertools.combinations(range(n), 2):
        assert pairs[i, j] == pytest.approx(m[bits([i, j])], rel=1e-12, abs=1e-14)
        assert pairs[j, i] == pairs[i, j]
    assert np.all(np.diag(pairs) == 0)
    # the game is quadratic: no dividend of order >= 3
    assert shapley.mass_by_order(m, absolute=True)[3:].sum() < 1e-12 * np.abs(m).sum()


def test_pairwise_dividends_from_factors_match_enumeration():
    # one hidden layer: Delta_a[x, c] = act_new[a, x] read_new[a, c] - act_old[a, x] read_old[a, c]
    rng = np.random.default_rng(1)
    n, N, C = 5, 7, 3
    act = rng.normal(size=(2, n, N))
    read = rng.normal(size=(2, n, C))
    D = np.einsum("kax,kac->axc", act, read * np.array([1.0, -1.0])[:, None, None])
    r = rng.normal(size=(N, C))
    masks = shapley.coalition_masks(n).astype(float)
    values = np.mean(r**2) - np.mean((r[None] + np.einsum("sa,axc->sxc", masks, D)) ** 2, axis=(1, 2))
    m = shapley.mobius(values)
    singles, pairs = shapley.pairwise_dividends(r, factors=(act, read * np.array([1.0, -1.0])[:, None, None]))
    np.testing.assert_allclose(singles, m[1 << np.arange(n)], rtol=1e-11)
    np.testing.assert_allclose([pairs[i, j] for i, j in itertools.combinations(range(n), 2)],
                               [m[bits([i, j])] for i, j in itertools.combinations(range(n), 2)], rtol=1e-11)


def one_hidden_layer():
    rng = np.random.default_rng(3)
    params = {"W1": jnp.asarray(rng.normal(size=(6, 4))), "W2": jnp.asarray(rng.normal(size=(3, 6)))}
    x = jnp.asarray(rng.normal(size=(9, 4)))
    y = jnp.asarray(rng.normal(size=(9, 3)))
    f = lambda q, xx: jnp.tanh(xx @ q["W1"].T) @ q["W2"].T
    loss = lambda q: jnp.mean((f(q, x) - y) ** 2)
    labels = shapley.unit_labels(params, {"W1": 0, "W2": 1}, np.arange(6))
    return params, x, y, f, loss, labels


def test_displacement_game_of_one_hidden_layer_is_pairwise_with_the_closed_form():
    params, x, y, f, loss, labels = one_hidden_layer()
    rng = np.random.default_rng(4)
    delta = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), params)
    values = shapley.displacement_game(loss, params, delta, labels)
    # direct check of one coalition
    S = [1, 4]
    on = np.isin(np.arange(6), S).astype(float)
    moved = {"W1": params["W1"] + delta["W1"] * on[:, None], "W2": params["W2"] + delta["W2"] * on[None, :]}
    assert values[bits(S)] == pytest.approx(float(loss(params) - loss(moved)), rel=1e-12)
    # neuron output changes, each neuron moved alone
    contrib = []
    for a in range(6):
        e = (np.arange(6) == a).astype(float)
        qa = {"W1": params["W1"] + delta["W1"] * e[:, None], "W2": params["W2"] + delta["W2"] * e[None, :]}
        contrib.append(np.asarray(f(qa, x) - f(params, x)))
    singles, pairs = shapley.pairwise_dividends(np.asarray(f(params, x) - y), np.array(contrib))
    m = shapley.mobius(values)
    np.testing.assert_allclose(singles, m[1 << np.arange(6)], rtol=1e-10)
    np.testing.assert_allclose(pairs[0, 5], m[bits([0, 5])], rtol=1e-10)
    assert shapley.mass_by_order(m, absolute=True)[3:].sum() < 1e-10 * np.abs(m).sum()


def test_training_game_one_sgd_step_is_the_step_game_and_adam_matches_a_direct_loop():
    params, x, y, f, loss, labels = one_hidden_layer()
    eta = 0.2
    v_sgd = shapley.training_game(loss, params, labels, optimizer=optax.sgd(eta), steps=1)
    np.testing.assert_allclose(v_sgd, shapley.step_game(loss, params, labels, step_size=eta), rtol=1e-10, atol=1e-15)
    opt = optax.adam(0.05)
    state = opt.init(params)
    state = opt.update(jax.grad(loss)(params), state, params)[1]  # a carried (non-initial) state
    steps = 3
    values = shapley.training_game(loss, params, labels, optimizer=opt, steps=steps, opt_state=state)
    S = [0, 2, 3]
    on = jax.tree_util.tree_map(lambda l: jnp.asarray(np.isin(np.asarray(l), S), jnp.float64), labels)
    q, s = params, state
    for _ in range(steps):
        g = jax.tree_util.tree_map(jnp.multiply, jax.grad(loss)(q), on)
        u, s = opt.update(g, s, q)
        q = optax.apply_updates(q, jax.tree_util.tree_map(jnp.multiply, u, on))
    assert values[bits(S)] == pytest.approx(float(loss(params) - loss(q)), rel=1e-10)
    # responses to partners' moves: the training game has dividends above order two
    m = shapley.mobius(values)
    assert shapley.mass_by_order(m, absolute=True)[3:].sum() > 1e-6 * np.abs(m).sum()


def test_args_are_passed_to_the_loss():
    params, x, y, f, loss, labels = one_hidden_layer()
    loss_args = lambda q, xx, yy: jnp.mean((f(q, xx) - yy) ** 2)
    np.testing.assert_allclose(shapley.step_game(loss_args, params, labels, step_size=0.1, args=(x, y)),
                               shapley.step_game(loss, params, labels, step_size=0.1), rtol=1e-12, atol=1e-15)


def test_pairwise_mass_by_level_matches_mass_by_level_of_the_enumerated_game():
    n = 6
    r, D, values = additive_game(n, seed=5)
    m = shapley.mobius(values)
    singles, pairs = shapley.pairwise_dividends(r, D)
    levels = [np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 2, 2, 3])]
    for absolute in (False, True):
        np.testing.assert_allclose(shapley.pairwise_mass_by_level(singles, pairs, levels, absolute=absolute),
                                   shapley.mass_by_level(m, levels, absolute=absolute), rtol=1e-10, atol=1e-14)
    lca = shapley.pair_levels(levels, n)
    assert lca[0, 1] == 2 and lca[0, 2] == 1 and lca[0, 3] == 0 and lca[4, 4] == 3
    # relabelling: row r moves player a to leaf perm[a]; the same as permuting the block labels
    rng = np.random.default_rng(6)
    perms = np.stack([rng.permutation(n) for _ in range(4)])
    relabelled = shapley.pairwise_mass_by_level(singles, pairs, levels, relabel=perms)
    for k, perm in enumerate(perms):
        np.testing.assert_allclose(relabelled[k], shapley.pairwise_mass_by_level(singles, pairs, [lev[perm] for lev in levels]), rtol=1e-10, atol=1e-14)
    # a stack of games gives each game's masses
    stacked = shapley.pairwise_mass_by_level(np.stack([singles, 2 * singles]), np.stack([pairs, -pairs]), levels)
    np.testing.assert_allclose(stacked[1, :-1], -stacked[0, :-1])
    assert stacked[1, -1] == pytest.approx(2 * stacked[0, -1])


def test_level_height():
    assert shapley.level_height(np.array([1.0, 0.0, 0.0])) == 1.0
    assert shapley.level_height(np.array([0.0, 0.0, 2.0])) == 0.0
    assert shapley.level_height(np.array([1.0, -1.0, 2.0])) == pytest.approx((1.0 + 0.5) / 4.0)
    np.testing.assert_allclose(shapley.level_height(np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])), [0.5, 0.5])


def test_check_levels_accepts_many_players():
    n = 64
    levels = [np.arange(n) // 32, np.arange(n) // 8]
    full = shapley.check_levels(levels, n)
    assert len(full) == 4
    assert shapley.pair_levels(levels, n)[0, 63] == 0
