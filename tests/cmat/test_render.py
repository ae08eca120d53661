"""render_mode="human" prints sanitised text: an action holding a lone surrogate (which no encoding can
write) must not break this step's render nor any later one."""

from __future__ import annotations

import pytest

import cmat_gym  # noqa: F401  (registers the envs)
from cmat_gym.cmat.pettingzoo_env import raw_env
from cmat_gym.cmat.wrapper import make_cmat
from cmat_gym.domains.db.env import DBEnv

SURROGATE = "SELECT '\ud800'"


def test_text_env_human_render_survives_a_lone_surrogate(capsys: pytest.CaptureFixture[str]) -> None:
    env = DBEnv(render_mode="human")
    env.reset(seed=0)
    actions = (SURROGATE, f"Action: Operation\n```sql\n{SURROGATE}\n```", "Action: Operation\n```sql\nSELECT 1\n```")
    for action in actions:  # the first raised before; every later step's render raised too
        env.step(action)
    out = capsys.readouterr().out
    assert "SELECT '?'" in out and "\ud800" not in out
    env.close()


def test_text_env_ansi_render_is_sanitised_too() -> None:
    env = DBEnv(render_mode="ansi")
    env.reset(seed=0)
    env.step(SURROGATE)
    text = env.render()
    assert "\ud800" not in text and "SELECT '?'" in text
    text.encode("utf-8")  # printable anywhere
    env.close()


@pytest.mark.parametrize("checker", ["rule", "none"])
def test_cmat_loop_human_render_survives_a_lone_surrogate(capsys: pytest.CaptureFixture[str], checker: str) -> None:
    env = make_cmat("cmat/DB-v0", checker=checker, render_mode="human")
    env.reset(seed=0)
    env.step(f"Action: Operation\n```sql\n{SURROGATE}\n```")
    env.step("Action: Operation\n```sql\nSELECT 1\n```")
    out = capsys.readouterr().out
    assert "SELECT '?'" in out and "\ud800" not in out
    env.close()


def test_pettingzoo_loop_human_render(capsys: pytest.CaptureFixture[str]) -> None:
    aec = raw_env("cmat/DB-v0", render_mode="human")
    aec.reset(seed=0)
    aec.step(aec.task.instruction)  # the user
    aec.step(SURROGATE)  # the assistant
    aec.step("APPROVE")
    assert "\ud800" not in capsys.readouterr().out
    aec.close()
