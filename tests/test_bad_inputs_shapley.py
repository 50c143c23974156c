"""Bad input to helpers.shapley: every public function answers with a TypeError/ValueError that
names the argument (issue 12, item 4; machinery in tests/_badinput.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

jax.config.update("jax_enable_x64", True)

from helpers import shapley  # noqa: E402

from _badinput import Case, check_coverage, run_case  # noqa: E402

rng = np.random.default_rng(0)
params = {"w1": jnp.asarray(rng.normal(size=(3, 4))), "w2": jnp.asarray(rng.normal(size=(4, 2)))}
x = jnp.asarray(rng.normal(size=(5, 3)))
y = jnp.asarray(rng.normal(size=(5, 2)))
f = lambda q, xx: jnp.tanh(xx @ q["w1"]) @ q["w2"]
loss = lambda q: jnp.mean((f(q, x) - y) ** 2)
per_example = lambda q, xi, yi: jnp.sum((f(q, xi[None])[0] - yi) ** 2)
labels = shapley.unit_labels(params, {"w1": 1, "w2": 0}, np.array([0, 0, 1, 2]))
labels_float = {k: np.asarray(v, float) for k, v in labels.items()}
labels_wrong_shape = {"w1": np.zeros((3, 3), int), "w2": np.zeros((4, 2), int)}
labels_wrong_tree = {"w1": labels["w1"]}
params_nan = {"w1": params["w1"].at[0, 0].set(jnp.nan), "w2": params["w2"]}
params_int = {"w1": np.ones((3, 4), int), "w2": params["w2"]}
delta = jax.tree_util.tree_map(jnp.ones_like, params)
sgd = optax.sgd(0.1)
v8 = rng.normal(size=8)
v8[0] = 0.0
v8_nan = v8.copy()
v8_nan[3] = np.nan
levels3 = [np.array([0, 0, 1])]
singles = rng.normal(size=4)
pairs = rng.normal(size=(4, 4))
pairs = pairs + pairs.T
levels4 = [np.array([0, 0, 1, 1])]
residual = rng.normal(size=(5, 2))
contributions = rng.normal(size=(4, 5, 2))
A = np.abs(rng.normal(size=(4, 4))) + np.eye(4)
A = A + A.T
grams = np.stack([np.outer(v, v) + np.eye(5) for v in rng.normal(size=(3, 5))])

CASES = [
    # coalition_masks / coalition_sizes
    Case(shapley.coalition_masks, (2.0,), {}, "n_players", "float"),
    Case(shapley.coalition_masks, (0,), {}, "n_players", "zero players"),
    Case(shapley.coalition_masks, (shapley.MAX_PLAYERS + 1,), {}, "n_players", "too many to enumerate"),
    Case(shapley.coalition_masks, (True,), {}, "n_players", "bool"),
    Case(shapley.coalition_sizes, (-1,), {}, "n_players", "negative"),
    # unit_labels
    Case(shapley.unit_labels, (params, {"w1": 1}, np.array([0.0, 1.0, 2.0, 3.0])), {}, "assignment", "float assignment"),
    Case(shapley.unit_labels, (params, {"w1": 1}, np.zeros((2, 2), int)), {}, "assignment", "2-d assignment"),
    Case(shapley.unit_labels, (params, {"w1": 1}, np.array([0, 1])), {}, "assignment", "wrong number of units"),
    Case(shapley.unit_labels, (params, {"w1": 1}, np.array([0, 1, -2, 3])), {}, "assignment", "label below -1"),
    Case(shapley.unit_labels, (params, [("w1", 1)], np.arange(4)), {}, "unit_axes", "not a dict"),
    Case(shapley.unit_labels, (params, {"w3": 1}, np.arange(4)), {}, "unit_axes", "unknown leaf"),
    Case(shapley.unit_labels, (params, {"w1": 5}, np.arange(4)), {}, "unit_axes", "axis out of range"),
    Case(shapley.unit_labels, ("params", {"w1": 1}, np.arange(4)), {}, "params", "a string"),
    # count_players
    Case(shapley.count_players, ({"w": -np.ones(3, int)},), {}, "labels", "no player"),
    Case(shapley.count_players, ({"w": np.array([0, 2, 2])},), {}, "labels", "player 1 owns nothing"),
    Case(shapley.count_players, ({"w": np.array([0.0, 1.0])},), {}, "labels", "float labels"),
    Case(shapley.count_players, ({},), {}, "labels", "no leaves"),
    Case(shapley.count_players, ({"w": np.array([0, -3])},), {}, "labels", "below -1"),
    # step_game
    Case(shapley.step_game, ("loss", params, labels), {"step_size": 0.1}, "loss_fn", "loss not callable"),
    Case(shapley.step_game, (loss, params, labels), {"step_size": -1.0}, "step_size", "negative step"),
    Case(shapley.step_game, (loss, params, labels), {"step_size": float("nan")}, "step_size", "NaN step"),
    Case(shapley.step_game, (loss, params, labels), {"step_size": "big"}, "step_size", "string step"),
    Case(shapley.step_game, (loss, params, labels_wrong_tree), {"step_size": 0.1}, "labels", "labels tree mismatch"),
    Case(shapley.step_game, (loss, params, labels_wrong_shape), {"step_size": 0.1}, "labels", "labels leaf shape"),
    Case(shapley.step_game, (loss, params, labels_float), {"step_size": 0.1}, "labels", "float labels"),
    Case(shapley.step_game, (loss, params_nan, labels), {"step_size": 0.1}, "params", "NaN params"),
    Case(shapley.step_game, (loss, params_int, labels), {"step_size": 0.1}, "params", "integer params leaf"),
    Case(shapley.step_game, (loss, params, labels), {"step_size": 0.1, "readout": 3}, "readout", "readout not callable"),
    Case(shapley.step_game, (loss, params, labels), {"step_size": 0.1, "chunk": 0}, "chunk", "chunk 0"),
    Case(shapley.step_game, (loss, params, labels), {"step_size": 0.1, "args": [x]}, "args", "args a list"),
    Case(shapley.step_game, (lambda q, z: loss(q) * z, params, labels), {"step_size": 0.1, "args": (jnp.nan,)}, "args", "NaN args"),
    Case(shapley.step_game, (lambda q: jnp.sqrt(loss(q) - 10.0), params, labels), {"step_size": 0.1}, ("loss_fn", "gradient"), "NaN loss"),
    Case(shapley.step_game, (lambda q: jnp.log(q["w1"][0, 0]), params, labels), {"step_size": 1e3}, "loss_fn", "NaN after the step"),
    # displacement_game
    Case(shapley.displacement_game, (loss, params, {"w1": delta["w1"][:2], "w2": delta["w2"]}, labels), {}, "displacement", "wrong leaf shape"),
    Case(shapley.displacement_game, (loss, params, {"w1": delta["w1"]}, labels), {}, "displacement", "wrong tree"),
    Case(shapley.displacement_game, (loss, params, params_nan, labels), {}, "displacement", "NaN displacement"),
    Case(shapley.displacement_game, (loss, params, delta, labels_wrong_shape), {}, "labels", "labels leaf shape"),
    Case(shapley.displacement_game, (lambda q: jnp.log(q["w1"][0, 0]), params, {"w1": -1e3 * delta["w1"], "w2": delta["w2"]}, labels), {},
         "loss_fn", "NaN after the move"),
    # training_game
    Case(shapley.training_game, (loss, params, labels), {"optimizer": "sgd", "steps": 2}, "optimizer", "not an optax optimizer"),
    Case(shapley.training_game, (loss, params, labels), {"optimizer": sgd, "steps": 0}, "steps", "zero steps"),
    Case(shapley.training_game, (loss, params, labels), {"optimizer": sgd, "steps": 1.5}, "steps", "float steps"),
    Case(shapley.training_game, (loss, params, labels), {"optimizer": optax.adam(0.1), "steps": 2, "opt_state": sgd.init(params)},
         "opt_state", "state of another optimiser"),
    Case(shapley.training_game, (loss, params, labels), {"optimizer": sgd, "steps": 2, "opt_state": params_nan}, "opt_state", "NaN state"),
    Case(shapley.training_game, (loss, params, labels_float), {"optimizer": sgd, "steps": 2}, "labels", "float labels"),
    Case(shapley.training_game, (loss, params, labels), {"optimizer": optax.sgd(1e200), "steps": 3}, "loss_fn", "diverging steps"),
    # mobius / zeta / shapley values / mass by order
    Case(shapley.mobius, (np.zeros(6),), {}, "values", "length not 2**n"),
    Case(shapley.mobius, (v8_nan,), {}, "values", "NaN"),
    Case(shapley.mobius, (np.zeros((2, 4)),), {}, "values", "2-d"),
    Case(shapley.mobius, ("values",), {}, "values", "a string"),
    Case(shapley.mobius, (np.zeros(0),), {}, "values", "empty"),
    Case(shapley.mobius, (np.zeros(1),), {}, "values", "one value"),
    Case(shapley.mobius, (np.zeros(2**21),), {}, "values", "more players than MAX_PLAYERS"),
    Case(shapley.zeta, (v8_nan,), {}, "dividends", "NaN"),
    Case(shapley.shapley_values, (np.r_[v8[:7], np.inf],), {}, "values", "inf"),
    Case(shapley.shapley_values, ([[0.0, 1.0], [2.0]],), {}, "values", "ragged list"),
    Case(shapley.shapley_values, (v8.astype(complex),), {}, "values", "complex"),
    Case(shapley.shapley_from_marginals, (np.zeros(3),), {}, "values", "length 3"),
    Case(shapley.mass_by_order, (v8_nan,), {}, "dividends", "NaN"),
    Case(shapley.mass_by_order, (v8,), {"absolute": "yes"}, "absolute", "string flag"),
    # level structures
    Case(shapley.check_levels, ([np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2])], 4), {}, "levels", "not nested"),
    Case(shapley.check_levels, ([np.array([0, 0, 1])], 4), {}, "levels", "wrong length"),
    Case(shapley.check_levels, ([np.array([0.0, 0.0, 1.0, 1.0])], 4), {}, "levels", "float blocks"),
    Case(shapley.check_levels, ("levels", 4), {}, "levels", "a string"),
    Case(shapley.check_levels, (levels4, 0), {}, "n_players", "zero players"),
    Case(shapley.winter_values, (v8_nan, levels3), {}, "values", "NaN values"),
    Case(shapley.winter_values, (v8, [np.array([0, 1])]), {}, "levels", "level of the wrong length"),
    Case(shapley.owen_values, (v8, np.array([0, 1])), {}, "partition", "wrong length"),
    Case(shapley.owen_values, (v8, np.array([0.0, 1.0, 1.0])), {}, "partition", "float partition"),
    Case(shapley.level_depths, (25, []), {}, "n_players", "too many to enumerate"),
    Case(shapley.level_depths, (3, [np.array([0, 1])]), {}, "levels", "level of the wrong length"),
    Case(shapley.mass_by_level, (v8, [np.array([0, 1, 1, 0])]), {}, "levels", "level of the wrong length"),
    Case(shapley.mass_by_level, (v8, levels3), {"absolute": 1}, "absolute", "int flag"),
    Case(shapley.quotient_game, (v8, np.array([0, 1])), {}, "partition", "wrong length"),
    Case(shapley.quotient_game, (v8_nan, np.array([0, 1, 1])), {}, "values", "NaN values"),
    # pairwise games
    Case(shapley.pairwise_dividends, (residual * np.nan, contributions), {}, "residual", "NaN residual"),
    Case(shapley.pairwise_dividends, (residual, contributions[:, :4]), {}, "contributions", "contributions of other inputs"),
    Case(shapley.pairwise_dividends, (residual,), {}, "contributions", "neither contributions nor factors"),
    Case(shapley.pairwise_dividends, (residual, contributions), {"factors": (np.zeros((2, 4, 5)), np.zeros((2, 4, 2)))}, "contributions", "both"),
    Case(shapley.pairwise_dividends, (residual,), {"factors": (np.zeros((2, 4, 5)), np.zeros((2, 3, 2)))}, "factors", "factor shapes differ"),
    Case(shapley.pairwise_dividends, (residual,), {"factors": np.zeros((2, 4, 5))}, "factors", "not a pair"),
    Case(shapley.pairwise_dividends, (residual,), {"factors": (np.full((2, 4, 5), np.nan), np.zeros((2, 4, 2)))}, "factors", "NaN factors"),
    Case(shapley.pairwise_dividends, (np.ones((5, 2), int), contributions), {}, "residual", "integer residual"),
    Case(shapley.pairwise_dividends, (residual, contributions * np.inf), {}, "contributions", "inf contributions"),
    Case(shapley.pairwise_dividends, (residual[None], contributions), {}, "residual", "3-d residual"),
    Case(shapley.pair_levels, ([np.array([0, 1])], 4), {}, "levels", "level of the wrong length"),
    Case(shapley.pair_levels, (levels4, 4.0), {}, "n_players", "float n_players"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs[:3, :3], levels4), {}, "pairs", "pairs of other players"),
    Case(shapley.pairwise_mass_by_level, (singles[None, None], pairs, levels4), {}, "singles", "3-d singles"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs * np.nan, levels4), {}, "pairs", "NaN pairs"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs, levels4), {"relabel": np.array([[0, 0, 1, 2]])}, "relabel", "not a permutation"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs, levels4), {"relabel": np.array([[0.0, 1.0, 2.0, 3.0]])}, "relabel", "float relabel"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs, levels4), {"relabel": np.arange(4)}, "relabel", "1-d relabel"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs, [np.array([0, 1, 1])]), {}, "levels", "level of the wrong length"),
    Case(shapley.pairwise_mass_by_level, (singles, pairs, levels4), {"absolute": "no"}, "absolute", "string flag"),
    Case(shapley.level_height, (np.zeros(4),), {}, "masses", "no mass"),
    Case(shapley.level_height, (np.ones(1),), {}, "masses", "one level"),
    Case(shapley.level_height, (np.array([1.0, np.nan]),), {}, "masses", "NaN"),
    # second-order structure and similarities
    Case(shapley.gradient_hessian_coupling, (3, params, labels), {}, "loss_fn", "loss not callable"),
    Case(shapley.gradient_hessian_coupling, (loss, params, labels_wrong_tree), {}, "labels", "labels tree mismatch"),
    Case(shapley.gradient_hessian_coupling, (loss, params_nan, labels), {}, "params", "NaN params"),
    Case(shapley.gradient_hessian_coupling, (lambda q: jnp.sqrt(loss(q) - 10.0), params, labels), {}, "gradient", "NaN gradient"),
    Case(shapley.group_grams, (np.ones(5), np.zeros(5, int), 1), {}, "features", "1-d features"),
    Case(shapley.group_grams, (np.ones((3, 5)), np.zeros(4, int), 1), {}, "flat_labels", "wrong length"),
    Case(shapley.group_grams, (np.ones((3, 5)), np.array([0, 1, 2, 0, 5]), 3), {}, "flat_labels", "label out of range"),
    Case(shapley.group_grams, (np.ones((3, 5)), np.zeros(5, int), 0), {}, "n_groups", "zero groups"),
    Case(shapley.group_grams, (np.full((3, 5), np.nan), np.zeros(5, int), 1), {}, "features", "NaN"),
    Case(shapley.group_grams, (np.ones((3, 5)), np.zeros(5, int), 1), {"centre": "yes"}, "centre", "string flag"),
    Case(shapley.flat_labels, (params, labels_wrong_shape), {}, "labels", "labels leaf shape"),
    Case(shapley.alignment, (np.zeros((2, 3, 3)),), {}, "grams", "zero Gram"),
    Case(shapley.alignment, (np.ones((3, 3)),), {}, "grams", "2-d"),
    Case(shapley.alignment, (np.ones((2, 3, 4)),), {}, "grams", "not square"),
    Case(shapley.alignment, (grams * np.nan,), {}, "grams", "NaN"),
    Case(shapley.alignment, (np.ones((2, 3, 3)),), {"centre": True}, "grams", "constant Gram is zero after centring"),
    Case(shapley.tangent_similarity, ("f", params, x, labels), {}, "f", "f not callable"),
    Case(shapley.tangent_similarity, (f, params, x * np.nan, labels), {}, "x", "NaN inputs"),
    Case(shapley.tangent_similarity, (f, params, x, labels_wrong_tree), {}, "labels", "labels tree mismatch"),
    Case(shapley.tangent_similarity, (f, params, np.ones((5, 3), int), labels), {}, "x", "integer inputs"),
    Case(shapley.tangent_similarity, (lambda q, xx: f(q, xx)[..., None], params, x, labels), {}, "f", "3-d outputs"),
    Case(shapley.hessian_similarity, (lambda q: jnp.sum(q["w1"]), params, labels), {}, "loss_fn", "zero curvature"),
    Case(shapley.hessian_similarity, (loss, params, labels_wrong_shape), {}, "labels", "labels leaf shape"),
    Case(shapley.noise_similarity, (per_example, params, x, y[:4], labels), {}, "y", "fewer targets"),
    Case(shapley.noise_similarity, (per_example, params, x[:1], y[:1], labels), {}, "x", "one example"),
    Case(shapley.noise_similarity, (None, params, x, y, labels), {}, "per_example_loss", "None"),
    # trees and partitions
    Case(shapley.player_tree, (A, [2, 1]), {}, "cuts", "decreasing cuts"),
    Case(shapley.player_tree, (A, [1.5, 2]), {}, "cuts", "float cuts"),
    Case(shapley.player_tree, (A, 2), {}, "cuts", "int instead of a list"),
    Case(shapley.player_tree, (A, [2, 5]), {}, "cuts", "more clusters than players"),
    Case(shapley.player_tree, (A * np.nan, [2]), {}, "similarity", "NaN"),
    Case(shapley.player_tree, (np.ones((1, 1)), [1]), {}, "similarity", "one player"),
    Case(shapley.player_tree, (np.ones((3, 4)), [2]), {}, "similarity", "not square"),
    Case(shapley.player_tree, (np.diag([1.0, 1.0, 0.0, 1.0]), [2]), {}, "similarity", "a player with no affinity"),
    Case(shapley.player_tree, (A, [2]), {"dims": 0}, "dims", "dims 0"),
    Case(shapley.flat_partition, (A, 5), {}, "k", "more clusters than rows"),
    Case(shapley.flat_partition, (np.ones(4), 2), {}, "features", "1-d"),
    Case(shapley.flat_partition, (A, 2), {"seed": "0"}, "seed", "string seed"),
    Case(shapley.flat_partition, (A * np.nan, 2), {}, "features", "NaN"),
    Case(shapley.partition_agreement, (np.array([0]), np.array([0])), {}, "a", "one player"),
    Case(shapley.partition_agreement, (np.array([0, 1, 1]), np.array([0, 1])), {}, "b", "different lengths"),
    Case(shapley.partition_agreement, (np.array([0.0, 1.0]), np.array([0, 1])), {}, "a", "float labels"),
    Case(shapley.partition_agreement, (np.zeros((2, 2), int), np.zeros((2, 2), int)), {}, "a", "2-d labels"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case):
    run_case(case)


def test_every_public_function_is_covered():
    check_coverage(shapley, CASES)
