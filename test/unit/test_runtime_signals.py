"""A node's Ctrl-C is never lost: one that lands in a weakref callback (where Python can only print
it) is delivered again to ordinary code (test_node_lifecycle stops whole launches)."""

import gc
import signal
import sys
import time
import weakref

import pytest

from mbrl_control.nodes.runtime import redeliver_lost_interrupts


def _interrupt_in_a_weakref_callback() -> None:
    class Cached:
        pass

    def on_collected(_ref) -> None:
        raise KeyboardInterrupt  # SIGINT arriving while the collector runs a callback

    obj = Cached()
    ref = weakref.ref(obj, on_collected)
    del obj  # the callback runs here, and its exception cannot propagate
    gc.collect()
    assert ref() is None
    time.sleep(1.0)  # ordinary code, where a pending interrupt is raised


def test_an_interrupt_lost_in_a_weakref_callback_is_raised_again_in_ordinary_code(capsys):
    previous_hook, previous_handler = sys.unraisablehook, signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        redeliver_lost_interrupts()
        with pytest.raises(KeyboardInterrupt):
            _interrupt_in_a_weakref_callback()
        assert "Traceback" not in capsys.readouterr().err
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous_handler)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pytest's own note of the loss
def test_without_it_the_interrupt_is_printed_and_lost(capsys):
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _interrupt_in_a_weakref_callback()  # returns: the interrupt is gone
    finally:
        signal.signal(signal.SIGINT, previous_handler)
