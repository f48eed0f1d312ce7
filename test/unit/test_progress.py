"""Long offline work shows its progress on stderr (tqdm), and stdout still ends in one JSON line."""

import json
import subprocess
import sys

import torch
import yaml

from mbrl_control.core.builders import load_robot
from mbrl_control.core.learning import ReplayBuffer
from mbrl_control.paths import config_dir
from mbrl_control.progress import follow, progress_bar
from mbrl_control_testing.exploration import RandomExplorer, explore


def test_follow_moves_a_bar_to_each_report_with_its_figures():
    with progress_bar(desc="x", disable=False) as bar:
        report = follow(bar)
        report(3, 10, {"loss": 0.123456, "epoch": 2})
        assert (bar.n, bar.total) == (3, 10) and bar.postfix == "loss=0.1235, epoch=2"
        report(10, 12, {})  # the total may change (a budget met early, a resumed run)
        assert (bar.n, bar.total) == (10, 12)


def test_offline_training_shows_epochs_and_sac_steps_on_stderr_and_ends_stdout_in_json(tmp_path):
    robot = load_robot("cartpole")
    starts = torch.tensor([0.0, 0.1, 0.0, 0.0]) + 0.05 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    explorers = [RandomExplorer(robot.task.action_low * 0.2, robot.task.action_high * 0.2, hold=5, seed=i)
                 for i in range(6)]
    data = explore(robot.model, explorers, starts, 80)
    buffer = ReplayBuffer(4, 1, tmp_path / "learner" / "replay")
    for i in range(len(data)):
        buffer.append(data.state[i], data.action[i], data.next_state[i], 0.0, bool(data.done[i]), float(data.stamp[i]),
                      int(data.episode[i]))
    buffer.close()
    config = yaml.safe_load((config_dir() / "cartpole.yaml").read_text())
    config["learner"]["ros__parameters"]["trainer"]["max_epochs"] = 3
    robot_file = tmp_path / "robot.yaml"
    robot_file.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "mbrl_control.cli", "train", "--from", str(tmp_path / "learner"), "--out",
           str(tmp_path / "out"), "--robot", str(robot_file), "--policy", "--mbpo", "sac_steps=6", "epochs=2",
           "rollouts_per_epoch=8", "eval_starts=2", "eval_steps=5"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["epochs"] <= 3 and figures["mbpo_sac_steps"] == 6
    assert "ensemble: " in result.stderr and "epoch" in result.stderr
    assert "MBPO policy (SAC): 100%" in result.stderr and "6/6" in result.stderr
    assert "it/s" not in result.stdout and "epoch/s" not in result.stdout and "%|" not in result.stdout
