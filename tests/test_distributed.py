"""segzoo.distributed: cluster settings from flags, SLURM and Kubernetes; multi-process JAX data-parallel training.

The slow tests start real processes on this machine, joined through a loopback
coordinator with JAX's CPU collectives (gloo), each training the harness's tiny
preset on a generated folder (the protocol does not depend on the model).
"""

import csv
import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from harness import REPO_ROOT, TESTS_DIR, TINY_CLI
from segzoo.distributed import DEFAULT_COORDINATOR_PORT, ClusterSettings, first_slurm_host, resolve_cluster
from segzoo.models import load_model
from segzoo.training import TrainConfig, train

PRESET = "tiny"  # harness.register_tiny_preset
TIMEOUT = 420  # seconds for a group of processes: a hang fails instead of blocking


@pytest.mark.parametrize("nodelist, host", [
    ("node07", "node07"),
    ("node07,node09", "node07"),
    ("gpu[03-05,09],cpu1", "gpu03"),
    ("gpu[009,011]", "gpu009"),
    ("rack[1-2]-node[01-04],login", "rack1-node01"),
])
def test_first_slurm_host(nodelist, host):
    assert first_slurm_host(nodelist) == host


def test_nothing_set_means_one_process():
    assert resolve_cluster(environ={}) == ClusterSettings(num_processes=1, process_id=0)


def test_slurm_environment():
    environ = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_JOB_ID": "5000",
               "SLURM_STEP_NODELIST": "gpu[03-05,09]", "SLURM_JOB_NODELIST": "other[1-9]"}
    cluster = resolve_cluster(environ=environ)
    port = DEFAULT_COORDINATOR_PORT + 5000 % 4096
    assert cluster == ClusterSettings(4, 2, f"gpu03:{port}", "SLURM") and not cluster.is_chief
    assert resolve_cluster(environ={**environ, "SEGZOO_COORDINATOR_PORT": "1234"}).coordinator_address == "gpu03:1234"
    assert resolve_cluster(coordinator_port=4321, environ=environ).coordinator_address == "gpu03:4321"
    del environ["SLURM_STEP_NODELIST"]  # outside an srun step: the job's first node
    assert resolve_cluster(environ=environ).coordinator_address == f"other1:{port}"


def test_kubernetes_indexed_job_environment():
    environ = {"JOB_COMPLETION_INDEX": "1", "SEGZOO_NUM_PROCESSES": "3",
               "SEGZOO_COORDINATOR_ADDRESS": "train-0.train:1234"}
    assert resolve_cluster(environ=environ) == ClusterSettings(3, 1, "train-0.train:1234", "Kubernetes")
    bare_host = resolve_cluster(environ={**environ, "SEGZOO_COORDINATOR_ADDRESS": "train-0.train"})
    assert bare_host.coordinator_address == f"train-0.train:{DEFAULT_COORDINATOR_PORT}"
    with pytest.raises(ValueError, match="SEGZOO_NUM_PROCESSES"):
        resolve_cluster(environ={"JOB_COMPLETION_INDEX": "1"})
    with pytest.raises(ValueError, match="SEGZOO_COORDINATOR_ADDRESS"):
        resolve_cluster(environ={"JOB_COMPLETION_INDEX": "1", "SEGZOO_NUM_PROCESSES": "2"})


def test_explicit_values_win_over_the_environment():
    environ = {"SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_STEP_NODELIST": "gpu1",
               "SEGZOO_PROCESS_ID": "3"}
    assert resolve_cluster(environ=environ).process_id == 3  # segzoo's variables before the scheduler's
    cluster = resolve_cluster("10.0.0.1:999", num_processes=2, process_id=1, environ=environ)
    assert cluster == ClusterSettings(2, 1, "10.0.0.1:999", "SLURM")


def test_bad_cluster_settings_are_explained():
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
        resolve_cluster("host:1", num_processes=2, process_id=2, environ={})
    with pytest.raises(ValueError, match="--process_id"):
        resolve_cluster("host:1", num_processes=2, environ={})
    with pytest.raises(ValueError, match="--coordinator_address"):
        resolve_cluster(num_processes=2, process_id=0, environ={})
    with pytest.raises(ValueError, match="'host:port'"):
        resolve_cluster("host:abc", num_processes=2, process_id=0, environ={})
    with pytest.raises(ValueError, match="SLURM_NTASKS=.x."):
        resolve_cluster(environ={"SLURM_NTASKS": "x", "SLURM_PROCID": "0"})


def test_distributed_training_needs_the_jax_backend(make_folder, tmp_path):
    assert keras.backend.backend() == "tensorflow"  # conftest's default
    config = dict(data=str(make_folder(num_sources=4, copies=0)), checkpoint_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        train(TrainConfig(distributed=True, **config))
    with pytest.raises(ValueError, match="exclude each other"):
        train(TrainConfig(distributed=True, multi_gpu=True, **config))
    with pytest.raises(ValueError, match="--distributed"):
        train(TrainConfig(num_processes=2, **config))
    assert not os.path.exists(tmp_path / "run")


# ----------------------------------------------------------------------------------------------
# Real processes

_WORKER = textwrap.dedent("""
    import json, logging, os, sys
    import keras, numpy as np

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    import harness
    from segzoo.files import PARTIAL_PREFIX

    harness.register_tiny_preset()

    saved = []  # the files this process saves a model to (their final names, not atomic_write's temporary ones)
    save = keras.Model.save

    def recording_save(self, path, *args, **kwargs):
        name = os.path.basename(str(path))
        if name.startswith(PARTIAL_PREFIX):
            name = name.split(".", 2)[2]
        saved.append(name)
        return save(self, path, *args, **kwargs)

    keras.Model.save = recording_save

    from segzoo.training import TrainConfig, train
    model, history = train(TrainConfig(**json.loads(sys.argv[1])))
    np.savez(sys.argv[2], *[keras.ops.convert_to_numpy(w) for w in model.weights])
    print(json.dumps({"history": history, "saved": saved, "dtype": model.compute_dtype}))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(local_devices=1, **variables):
    """A JAX-backend environment for a child process with ``local_devices`` CPU devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SEGZOO_", "JOB_COMPLETION"))}
    env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}",
               PYTHONPATH=os.pathsep.join([REPO_ROOT, TESTS_DIR, env.get("PYTHONPATH", "")]), **variables)
    return env


def _run_together(commands):
    """Start every ``(argv, env)`` at once; wait for all (killing all on timeout); return ``(stdout, stderr)`` each."""
    processes = [subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for argv, env in commands]
    try:
        outputs = [process.communicate(timeout=TIMEOUT) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        outputs = [process.communicate() for process in processes]
        pytest.fail("processes hung:\n" + "\n".join(err[-3000:] for _, err in outputs))
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, f"{process.args} failed:\n{out[-2000:]}\n{err[-6000:]}"
    return outputs


def _worker(config, weights_file, env):
    return [sys.executable, "-c", _WORKER, json.dumps(config), str(weights_file)], env


def _training(folder, checkpoint_dir, **overrides):
    values = dict(data=str(folder), preset=PRESET, epochs=1, steps_per_epoch=2, batch_size=2, image_size=[64, 64],
                  weights="none", optimizer="sgd", learning_rate=0.01, warmup_epochs=0.0, val_ratio=0.2,
                  deterministic=True, progress=0, checkpoint_dir=str(checkpoint_dir))
    return {**values, **overrides}


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_together(make_folder, tmp_path):
    """2 processes x 1 device and batch 2 == 1 process with batch 4 and twice the learning rate."""
    folder = make_folder(num_sources=10, copies=0, size=(64, 64))  # 8 training images: one epoch of 2 steps
    run = tmp_path / "run"
    port = _free_port()
    cluster = dict(distributed=True, coordinator_address=f"127.0.0.1:{port}", num_processes=2)
    outputs = _run_together([
        _worker(_training(folder, run, process_id=0, progress=2, **cluster), tmp_path / "w0.npz", _environment()),
        _worker(_training(folder, run, process_id=1, progress=2, **cluster), tmp_path / "w1.npz", _environment()),
        _worker(_training(folder, tmp_path / "single", batch_size=4, learning_rate=0.02), tmp_path / "w.npz",
                _environment()),
    ])
    (out0, err0), (out1, err1), (out_single, _) = outputs
    first, second, single = (json.loads(out.strip().splitlines()[-1]) for out in (out0, out1, out_single))

    # one model: both processes hold the same weights, equal to the one-process run's
    weights = [np.load(tmp_path / f"{name}.npz") for name in ("w0", "w1", "w")]
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])
        scale = max(1.0, float(np.abs(weights[2][key]).max()))
        np.testing.assert_allclose(weights[0][key], weights[2][key], rtol=0, atol=2e-3 * scale, err_msg=key)
    assert first["history"] == second["history"]
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(first["history"][name], single["history"][name], rtol=1e-3, err_msg=name)
    for name in ("mean_iou", "val_mean_iou"):  # a few pixels' argmax may flip
        np.testing.assert_allclose(first["history"][name], single["history"][name], atol=2e-3, err_msg=name)

    # process 0 alone writes, logs and prints; what it saved is the trained model
    assert first["saved"] == ["best.keras", "last.keras"] and second["saved"] == []
    assert sorted(os.listdir(run)) == ["best.keras", "config.json", "last.keras", "log.csv", "logs", "state.json"]
    assert "global batch 4 on 2 device(s), peak learning rate 0.02" in err0 and "global batch" not in err1
    progress = re.compile(r"^\d+/\d+ ", re.MULTILINE)  # Keras's "2/2 - 30s - loss: ..." lines
    assert progress.search(out0) and not progress.search(out1)
    saved = load_model(run / "last.keras")
    for key, value in zip(weights[0], saved.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(value), weights[0][key])

    # every process restarts from last.keras with the run's saved settings (one more epoch, deliberately);
    # the cluster settings come from a Kubernetes indexed Job's environment
    port = _free_port()
    flags = ["--checkpoint_dir", str(run), "--distributed", "--resume", "--epochs", "2", "--allow_changes",
             "--progress", "0"]
    resumed = _run_together([
        ([sys.executable, "-c", TINY_CLI, "train", *flags],
         _environment(JOB_COMPLETION_INDEX=str(index), SEGZOO_NUM_PROCESSES="2",
                      SEGZOO_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")) for index in (0, 1)])
    assert "Resuming after epoch 1 (optimizer step 2)" in resumed[0][1] and "Resuming" not in resumed[1][1]
    with open(run / "state.json") as f:
        assert json.load(f)["epochs_done"] == 2
    with open(run / "log.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]


@pytest.mark.slow
def test_mixed_bfloat16_on_two_local_devices(make_folder, tmp_path):
    folder = make_folder(num_sources=5, copies=0, size=(64, 64))
    config = _training(folder, tmp_path / "run", distributed=True, precision="mixed_bfloat16", batch_size=1,
                       steps_per_epoch=1, scale_learning_rate=False)
    [(out, err)] = _run_together([_worker(config, tmp_path / "w.npz", _environment(local_devices=2))])
    result = json.loads(out.strip().splitlines()[-1])
    assert "global batch 2 on 2 device(s), peak learning rate 0.01" in err
    assert result["dtype"] == "bfloat16" and result["saved"] == ["best.keras", "last.keras"]
    assert all(np.isfinite(result["history"][name]).all() for name in ("loss", "val_loss"))
    assert all(np.isfinite(w).all() for w in np.load(tmp_path / "w.npz").values())
