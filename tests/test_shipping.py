"""The runner's shipping thread: round robin over shards, back-pressure from a shard's rate
limiter, errors surfaced to the runner's loop (real Ray actors as shards)."""
import threading
import time

import numpy as np
import pytest

from rlfleet.platform import batch as B
from rlfleet.platform.shipping import Shipper


def shard_class():
    """Defined here so that Ray pickles it by value (workers cannot import test modules)."""

    class Shard:
        """Records what arrives; answers the rate limiter's question with `allow`."""

        def __init__(self, allow=True, fail=False):
            self.got, self.allow, self.fail = [], allow, fail

        def add(self, seqs):
            if self.fail:
                raise ValueError("shard is broken")
            self.got.append(sorted(set(seqs["id"].tolist())) if "id" in seqs else len(seqs[B.MASK]))
            return self.allow

        def can_insert(self):
            return self.allow

        def set_allow(self, allow):
            self.allow = allow

        def received(self):
            return self.got

    return Shard


def seqs(i, n=3):
    """A batch of n sequences, each tagged with the batch's id."""
    return {"id": np.full(n, i), B.MASK: np.ones((n, 4), np.float32)}


def wait_for(pred, timeout=20.0):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_shipments_go_round_robin_and_are_counted(ray_session):
    ray = ray_session
    shards = [ray.remote(shard_class()).options(num_cpus=0).remote() for _ in range(2)]
    stop = threading.Event()
    shipper = Shipper(shards, first=1, stop=stop, min_interval_s=0.0)
    for i in range(5):
        shipper.put(seqs(i))
        wait_for(lambda: shipper.shipments == i + 1)  # one at a time: nothing to coalesce
    stop.set()
    shipper.join()
    assert ray.get(shards[1].received.remote()) == [[0], [2], [4]]  # starts at shard `first`
    assert ray.get(shards[0].received.remote()) == [[1], [3]]
    assert shipper.sequences == 15 and shipper.error is None


def test_batches_handed_over_within_the_interval_go_out_together(ray_session):
    ray = ray_session
    shard = ray.remote(shard_class()).options(num_cpus=0).remote()
    stop = threading.Event()
    shipper = Shipper([shard], first=0, stop=stop, min_interval_s=1.0, max_pending=8)
    shipper.put(seqs(0))
    wait_for(lambda: shipper.shipments == 1)
    for i in (1, 2, 3):  # within a second of the first shipment
        shipper.put(seqs(i))
    wait_for(lambda: shipper.shipments == 2)
    stop.set()
    shipper.join()
    assert ray.get(shard.received.remote()) == [[0], [1, 2, 3]]
    assert shipper.sequences == 12


def test_a_shard_that_says_no_holds_the_runner_back_until_it_says_yes(ray_session):
    ray = ray_session
    shard = ray.remote(shard_class()).options(num_cpus=0).remote(allow=False)
    stop = threading.Event()
    shipper = Shipper([shard], first=0, stop=stop, min_interval_s=0.0, max_pending=2)
    shipper.put(seqs(0))  # sent; its answer says no
    wait_for(lambda: shipper.shipments == 1)
    shipper.put(seqs(1))
    shipper.put(seqs(2))  # two wait: the most allowed
    done = threading.Event()
    blocked = threading.Thread(target=lambda: (shipper.put(seqs(3)), done.set()), daemon=True)
    blocked.start()
    time.sleep(0.5)
    assert not done.is_set() and shipper.shipments == 1  # the loop blocks; nothing more was sent
    ray.get(shard.set_allow.remote(True))
    assert done.wait(20)
    wait_for(lambda: shipper.sequences == 12)
    stop.set()
    shipper.join()
    got = ray.get(shard.received.remote())
    assert got[:2] == [[0], [1, 2]] and sum(got, []) == [0, 1, 2, 3]


def test_a_failing_shard_surfaces_at_the_next_put(ray_session):
    ray = ray_session
    shard = ray.remote(shard_class()).options(num_cpus=0).remote(fail=True)
    stop = threading.Event()
    shipper = Shipper([shard], first=0, stop=stop, min_interval_s=0.0, max_pending=2)
    shipper.put(seqs(0))
    shipper.put(seqs(1))  # the thread reads shipment 0's answer: the shard's error
    with pytest.raises(RuntimeError, match="shard is broken"):
        deadline = time.time() + 20
        while time.time() < deadline:
            shipper.put(seqs(2))
    stop.set()
    shipper.join()


def counting_source_class():
    class Source:
        """Stands in for the learner's get_weights and counts the polls (weights never change)."""

        def __init__(self):
            self.calls = 0

        def get_weights(self, known_version=-1):
            self.calls += 1
            return None

        def count(self):
            return self.calls

    return Source


@pytest.mark.parametrize("min_interval", [0.0, 0.25])
def test_runner_polls_weights_every_interval_steps_but_not_more_often_than_its_time_floor(ray_session, min_interval):
    """A fast env with weight_sync_interval 1 would poll the learner every loop step; the time floor
    (runners.weight_sync_min_interval_s) caps the polls a second."""
    from rlfleet.platform.envs import EnvMaker
    from rlfleet.platform.policies import RandomPolicy
    from rlfleet.platform.registry import resolve_env
    from rlfleet.platform.runner import EnvRunner, apex_epsilons

    ray = ray_session
    shard = ray.remote(shard_class()).options(num_cpus=0).remote()
    source = ray.remote(counting_source_class()).options(num_cpus=0).remote()
    maker = EnvMaker(resolve_env("gym:CartPole-v1"), {})
    runner = EnvRunner(0, maker, RandomPolicy, None, B.SequenceLayout(0, 4, 2), apex_epsilons(2), [shard], source,
                       (0, {}), ship_interval=64, weight_sync_interval=1, seed=0,
                       weight_sync_min_interval_s=min_interval)
    runner.start()
    wait_for(lambda: runner.env_steps > 0)
    t0, calls0 = time.time(), ray.get(source.count.remote())
    time.sleep(1.5)
    calls, elapsed = ray.get(source.count.remote()) - calls0, time.time() - t0
    runner.stop()
    assert runner.error is None, runner.error
    if min_interval:
        assert 2 <= calls <= elapsed / min_interval + 1
    else:  # one poll in flight at a time, answered in well under 100 ms
        assert calls > 3 * elapsed / 0.25
