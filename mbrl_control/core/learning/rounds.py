"""When the learner trains: the round schedule, apart from the node that runs it.

A round trains on everything recorded so far and is announced as including every episode up to
one (``through``): the episode manager waits for the round through the episode just ended before
the next one starts. Rounds start at every new episode (``episode``), every ``train_every`` new
transitions (``count``), or both (``episode_and_count``: models also improve within an episode,
as a realtime robot gets them while it runs). One round runs at a time; one asked for meanwhile
waits and then runs once, through the latest episode any request named."""

from __future__ import annotations

TRAIN_ON = ("episode", "count", "episode_and_count")


class RoundSchedule:
    def __init__(self, train_on: str = "episode", train_every: int = 500, transitions: int = 0) -> None:
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got '{train_on}'")
        if train_every < 1:
            raise ValueError(f"train_every must be >= 1, got {train_every}")
        self.train_on = train_on
        self.train_every = train_every
        self.episode = -1  # the episode the robots are in
        self.transitions_at_last_round = transitions  # (a restarted learner counts from what it reloaded)
        self.pending: int | None = None  # asked for while a round was still running

    def on_episode(self, episode: int) -> int | None:
        """A new episode number: the round it asks for (through the one before), or None."""
        if episode == self.episode:
            return None
        self.episode = episode
        # Every episode before this one is complete (a restarted learner learns that here too).
        return episode - 1 if self.train_on != "count" and episode > 0 else None

    def on_transitions(self, transitions: int) -> int | None:
        """The buffer now holds ``transitions``: the round that asks for, or None. Within an
        episode (episode_and_count) a round includes only the episodes before it in full."""
        if self.train_on == "episode" or transitions - self.transitions_at_last_round < self.train_every:
            return None
        return self.episode if self.train_on == "count" else self.episode - 1

    def started(self, transitions: int) -> None:
        """A round started on ``transitions`` transitions."""
        self.transitions_at_last_round = transitions

    def defer(self, through: int) -> None:
        """A round asked for while one runs: it runs next, through the latest episode asked for."""
        self.pending = through if self.pending is None else max(self.pending, through)

    def take_pending(self) -> int | None:
        """The round that waited, if any (once)."""
        pending, self.pending = self.pending, None
        return pending
