"""The learner's round schedule: when rounds start and which episodes each is announced to include
(the episode manager starts the next episode only after the round through the one just ended)."""

import pytest

from mbrl_control.core.learning.rounds import RoundSchedule


def test_per_episode_rounds_include_the_episode_just_ended_and_nothing_starts_on_counts():
    rounds = RoundSchedule("episode", train_every=10)
    assert rounds.on_episode(0) is None  # nothing has ended yet
    assert rounds.on_transitions(1000) is None
    assert rounds.on_episode(1) == 0
    assert rounds.on_episode(1) is None  # the same number again (republished) asks for nothing
    assert rounds.on_episode(2) == 1


def test_within_an_episode_rounds_include_only_the_episodes_already_complete():
    rounds = RoundSchedule("episode_and_count", train_every=100)
    rounds.on_episode(0)
    assert rounds.on_transitions(99) is None
    assert rounds.on_transitions(100) == -1  # episode 0 is still running: no episode complete
    rounds.started(100)
    assert rounds.on_transitions(150) is None  # counted from the last round's start
    assert rounds.on_episode(1) == 0  # the episode's end still gets its own round
    rounds.started(180)
    assert rounds.on_transitions(280) == 0  # mid episode 1: through episode 0 only


def test_count_rounds_keep_their_meaning_of_through_the_current_episode():
    rounds = RoundSchedule("count", train_every=50, transitions=500)  # a restart reloaded 500
    assert rounds.on_episode(3) is None
    assert rounds.on_transitions(549) is None
    assert rounds.on_transitions(550) == 3


def test_a_round_asked_for_while_one_runs_runs_once_through_the_latest_episode_asked_for():
    rounds = RoundSchedule("episode_and_count", train_every=10)
    rounds.defer(4)
    rounds.defer(3)  # a within-episode request after the episode's end must not shrink it
    assert rounds.take_pending() == 4
    assert rounds.take_pending() is None


@pytest.mark.parametrize("train_on, every", [("sometimes", 10), ("count", 0)])
def test_bad_settings_are_refused_by_name(train_on, every):
    with pytest.raises(ValueError, match="train_on|train_every"):
        RoundSchedule(train_on, every)
