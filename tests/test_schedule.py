import random

import pytest

from repaint.schedule import JumpSchedule, count_network_calls, jump_schedule, transitions


def _case_ids(data):
    return [case["id"] for case in data["cases"]]


def test_every_reference_schedule_is_reproduced(schedules_fixture):
    for case in schedules_fixture["cases"]:
        times = jump_schedule(**case["kwargs"])
        assert times == case["times"], case["id"]
        assert count_network_calls(times) == case["num_reverse_transitions"], case["id"]
        assert len(times) - 1 - count_network_calls(times) == case["num_forward_transitions"], case["id"]


def test_dataclass_matches_function_with_resolved_params(schedules_fixture):
    for case in schedules_fixture["cases"]:
        assert JumpSchedule(**case["resolved_params"]).times() == case["times"], case["id"]


def test_paper_setting_costs_2410_calls():
    assert JumpSchedule(250, jump_length=10, jump_n_sample=10).network_calls() == 2410
    assert JumpSchedule(250, jump_length=1, jump_n_sample=1).network_calls() == 250


def test_every_move_is_a_single_step_and_ends_at_minus_one():
    times = JumpSchedule(50, jump_length=5, jump_n_sample=3, n_sample=2, jump2_length=2, jump2_n_sample=2).times()
    assert times[0] == 49 and times[-1] == -1
    assert all(abs(b - a) == 1 for a, b in transitions(times))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"t_T": 0}, "t_T"),
        ({"t_T": 10, "jump_length": 0}, "jump_length"),
        ({"t_T": 10, "jump_n_sample": -1}, "jump_n_sample"),
        ({"t_T": 10, "jump_length": 10, "jump_n_sample": 2}, "smaller than steps"),
        ({"t_T": 10, "jump2_length": 12, "jump2_n_sample": 3}, "jump2_length"),
        ({"t_T": 10.5}, "integer"),
    ],
)
def test_impossible_parameters_are_refused(kwargs, word):
    with pytest.raises(ValueError, match=word):
        jump_schedule(**kwargs)


def test_transitions_refuse_jumps_of_more_than_one():
    with pytest.raises(ValueError, match="single steps"):
        transitions([5, 4, 2, -1])


def test_the_closed_form_bound_holds_and_is_exact_for_one_level():
    from repaint.schedule import network_calls_bound

    rng = random.Random(0)
    checked = 0
    for _ in range(1500):
        t_T = rng.randint(2, 200)
        params = dict(jump_length=rng.randint(1, t_T), jump_n_sample=rng.randint(1, 12), n_sample=rng.choice([1, 2]),
                      start_resampling=rng.choice([100_000_000, rng.randint(0, t_T)]),
                      jump2_length=rng.randint(1, t_T), jump2_n_sample=rng.choice([1, 1, 3]),
                      jump3_length=rng.randint(1, t_T), jump3_n_sample=rng.choice([1, 1, 2]))
        try:
            schedule = JumpSchedule(t_T, **params)
        except ValueError:
            continue
        checked += 1
        assert schedule.network_calls() <= network_calls_bound(t_T, schedule), (t_T, params)
    assert checked > 1000
    for t_T, j, r in ((250, 10, 10), (100, 7, 3), (50, 5, 1)):
        schedule = JumpSchedule(t_T, jump_length=j, jump_n_sample=r)
        assert network_calls_bound(t_T, schedule) == schedule.network_calls()
