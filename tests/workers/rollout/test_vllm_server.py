"""The vLLM server launcher binds to localhost unless a host is given."""

from verl.workers.rollout.vllm_server import server_argv


def test_server_binds_to_localhost_by_default():
    assert server_argv(["--model", "m"]) == ["--model", "m", "--host", "127.0.0.1"]
    assert server_argv(["--model", "m", "--host", "0.0.0.0"]) == ["--model", "m", "--host", "0.0.0.0"]
    assert server_argv(["--host=10.0.0.1"]) == ["--host=10.0.0.1"]
