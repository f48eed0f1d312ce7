"""The controller's per-tick sample row: one layout for writers and readers, older rows readable."""

import numpy as np
import pytest

from mbrl_control.core.learning import SampleLayout


def test_a_packed_row_unpacks_to_what_was_packed_and_its_label_reads_back():
    layout = SampleLayout(4, 1)
    row = layout.pack(stamp=12.34, episode=3, seq=987, state=np.array([0.1, -0.2, 0.3, -0.4]),
                      action=np.array([5.5]), reward=-0.25)
    assert len(row) == layout.size == 9
    assert layout.labels == ["stamp", "episode", "seq", "x0", "x1", "x2", "x3", "u0", "reward"]
    s = layout.unpack(row)
    assert (s.stamp, s.episode, s.seq, s.reward) == (12.34, 3, 987, -0.25)
    np.testing.assert_array_equal(s.state, [0.1, -0.2, 0.3, -0.4])
    np.testing.assert_array_equal(s.action, [5.5])
    assert SampleLayout.from_label(layout.label) == layout
    # The episode stays second and the reward last, where readers that index rows find them.
    assert row[1] == 3 and row[-1] == -0.25


def test_rows_recorded_before_the_sequence_number_read_with_seq_minus_one():
    old = SampleLayout.from_label("stamp,episode,x0,x1,x2,x3,u0,reward")
    assert (old.state_dim, old.action_dim, old.size) == (4, 1, 8)
    s = old.unpack([1.0, 2.0, 0.1, 0.2, 0.3, 0.4, -3.0, -0.5])
    assert (s.stamp, s.episode, s.seq, s.reward) == (1.0, 2, -1, -0.5)
    np.testing.assert_array_equal(s.state, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_array_equal(s.action, [-3.0])
    with pytest.raises(ValueError):
        old.pack(stamp=0.0, episode=0, seq=0, state=np.zeros(4), action=np.zeros(1), reward=0.0)


def test_a_header_field_this_version_does_not_know_is_skipped():
    newer = SampleLayout.from_label("stamp,episode,seq,robot,x0,x1,u0,reward")
    s = newer.unpack([1.0, 2.0, 7.0, 4.0, 0.1, 0.2, 3.0, -1.0])
    assert (s.seq, s.episode) == (7, 2)
    np.testing.assert_array_equal(s.state, [0.1, 0.2])


@pytest.mark.parametrize("label", ["", "a,b,c", "stamp,x0,u0,reward", "stamp,episode,x0,u0",
                                   "stamp,episode,x0,u0,x1,reward"])
def test_labels_that_are_no_sample_layout_are_refused(label):
    with pytest.raises(ValueError):
        SampleLayout.from_label(label)


def test_valid_checks_length_and_finiteness():
    layout = SampleLayout(2, 1)
    assert layout.valid(np.zeros(7))
    assert not layout.valid(np.zeros(6))
    assert not layout.valid(np.array([0, 0, 0, np.nan, 0, 0, 0.0]))
