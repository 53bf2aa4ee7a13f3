"""Laws of the A/B boot environment (core.ab), with power cuts and boot crashes anywhere."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetwarden.core import ab
from fleetwarden.core.ab import BootEnv, BootVerdict, SlotState
from fleetwarden.errors import InputError, InstallError

SLOTS = ("A", "B")


def test_a_healthy_update_commits_the_new_slot():
    env = BootEnv.fresh(SLOTS, "A")
    target = ab.inactive_slot(env, "A")
    assert target == "B"
    env = ab.begin_write(env, target)
    assert env.state("B") is SlotState.BAD
    env = ab.activate(env, target)
    booted, env = ab.boot(env)
    assert booted == "B"
    assert ab.after_boot(target, booted) is BootVerdict.TEST
    env = ab.commit(env, target, booted)
    for _ in range(10):
        booted, env = ab.boot(env)
        assert booted == "B"
    assert env.state("B") is SlotState.GOOD


def test_a_slot_that_never_boots_falls_back_after_its_attempts():
    env = ab.activate(ab.begin_write(BootEnv.fresh(SLOTS, "A"), "B"), "B", attempts=3)
    boots = []
    for _ in range(5):
        booted, env = ab.boot(env)
        boots.append(booted)  # the new slot "crashes" every time: nobody commits
    assert boots == ["B", "B", "B", "A", "A"]
    assert ab.after_boot("B", "A") is BootVerdict.FELL_BACK
    with pytest.raises(InstallError, match="refusing to commit slot B"):
        ab.commit(env, "B", "A")


def test_rollback_from_the_new_slot_needs_a_reboot_and_is_idempotent():
    env = ab.activate(ab.begin_write(BootEnv.fresh(SLOTS, "A"), "B"), "B")
    booted, env = ab.boot(env)
    plan = ab.rollback(env, "B", "A", booted)
    assert plan.reboot
    again = ab.rollback(plan.env, "B", "A", booted)
    assert again.env == plan.env
    booted, _ = ab.boot(plan.env)
    assert booted == "A"
    assert not ab.rollback(plan.env, "B", "A", "A").reboot


def test_bad_input_is_named():
    with pytest.raises(InputError, match="booted slot 'C'"):
        BootEnv.fresh(SLOTS, "C")
    with pytest.raises(InstallError, match="exactly two slots"):
        ab.inactive_slot(BootEnv.fresh(("A", "B", "C"), "A"), "A")
    with pytest.raises(InputError, match="attempts"):
        ab.activate(BootEnv.fresh(SLOTS, "A"), "B", attempts=0)
    with pytest.raises(InputError, match="no slot 'Z'"):
        ab.begin_write(BootEnv.fresh(SLOTS, "A"), "Z")


# The update protocol as the agent runs it: each entry is one boot-environment write (or a
# boot). A power cut may stop it after any of them; a crashing new slot never commits.
@given(
    cut=st.integers(min_value=0, max_value=6),
    new_slot_healthy=st.booleans(),
    crash_boots=st.integers(min_value=0, max_value=5),
    attempts=st.integers(min_value=1, max_value=4),
    start=st.sampled_from(SLOTS),
    updates=st.integers(min_value=1, max_value=3),
)
def test_power_cuts_and_crashes_always_leave_a_good_slot_booting(
    cut, new_slot_healthy, crash_boots, attempts, start, updates
):
    env = BootEnv.fresh(SLOTS, start)
    booted, env = ab.boot(env, attempts)
    for _ in range(updates):
        before = booted
        target = ab.inactive_slot(env, booted)
        steps = 0
        done = False

        def step() -> bool:
            nonlocal steps
            steps += 1
            return steps > cut  # the power fails here

        env = ab.begin_write(env, target)
        if step():
            booted, env = ab.boot(env, attempts)
            assert booted == before  # a half-written slot is never booted (rule 1)
            continue
        env = ab.activate(env, target, attempts)
        if step():
            booted, env = ab.boot(env, attempts)
            assert booted == target  # activated: the next boot tries it
        else:
            booted, env = ab.boot(env, attempts)
        # The new slot may crash at boot a number of times before the agent runs.
        tries_of_target = 0
        for _ in range(crash_boots):
            if booted != target:
                break
            tries_of_target += 1
            booted, env = ab.boot(env, attempts)
        assert tries_of_target <= attempts  # rule 3: bounded tries of an unconfirmed slot
        verdict = ab.after_boot(target, booted)
        if verdict is BootVerdict.FELL_BACK:
            assert booted == before
            env = ab.rollback(env, target, before, booted).env
        elif new_slot_healthy:
            env = ab.commit(env, target, booted, attempts)
            done = True
        else:
            plan = ab.rollback(env, target, before, booted)
            assert plan.reboot
            booted, env = ab.boot(plan.env, attempts)
            assert booted == before
        # Whatever happened, the device now boots a good slot, ten times over.
        for _ in range(10):
            booted, env = ab.boot(env, attempts)
            assert env.state(booted) is SlotState.GOOD
        assert booted == (target if done else before)
