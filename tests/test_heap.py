"""``kiln.heap.freeze_heap``: start-up objects leave the collector's reach; later garbage is still collected."""

from __future__ import annotations

import json
import subprocess
import sys

# In a child process: a frozen heap is never collected, which the test session's own heap must not be.
_CHILD = """
import gc, json, weakref
from kiln.heap import freeze_heap

class Node:
    pass

before = Node(); before.self = before           # a cycle alive at start-up
frozen = freeze_heap()
del before
gc.collect()
kept_frozen = gc.get_freeze_count()
later = Node(); later.self = later              # a cycle made after start-up, then dropped
probe = weakref.ref(later)
del later
gc.collect()
old = Node(); old.self = old                    # a cycle frozen with the heap (a model loaded then)...
old_probe = weakref.ref(old)
freeze_heap()
del old                                         # ...and dropped later (the model closed)
gc.collect()
frozen_cycle_kept = old_probe() is not None     # a collection leaves it alone
freeze_heap()                                   # the next freeze (the next model's load) takes it
print(json.dumps({"frozen": frozen, "still_frozen": kept_frozen, "later_collected": probe() is None,
                  "frozen_cycle_kept": frozen_cycle_kept, "refreeze_collected": old_probe() is None}))
"""


def test_freeze_moves_the_heap_out_of_reach_and_later_garbage_is_still_collected() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout)
    assert result["frozen"] > 1000, "the interpreter's own start-up objects at least"
    assert result["still_frozen"] == result["frozen"], "collections leave frozen objects alone"
    assert result["later_collected"] is True
    assert result["frozen_cycle_kept"] is True, "collections skip frozen objects"
    assert result["refreeze_collected"] is True, "a new freeze collects the cycles dropped since the last"
