"""Independent command lines run side by side: each child spends seconds importing TensorFlow on one core,
so a test that checks several invocations of a CLI starts them together instead of one after another."""
import subprocess

AT_ONCE = 3  # children running together: both cores busy, and the memory of a few TensorFlow processes


def run_side_by_side(commands: list[list[str]], timeout: float, envs: list[dict] | None = None,
                     **popen) -> list[subprocess.CompletedProcess]:
    """Runs the commands, :data:`AT_ONCE` at a time (text mode, stdout and stderr captured, ``envs[i]`` the
    environment of command i when given, ``popen`` passed on to each ``Popen``), and returns their
    ``CompletedProcess`` in the given order; on a timeout or any error the children still running are
    killed."""
    procs: list[subprocess.Popen] = []
    done: dict[int, subprocess.CompletedProcess] = {}

    def finish(index: int) -> None:
        out, err = procs[index].communicate(timeout=timeout)
        done[index] = subprocess.CompletedProcess(procs[index].args, procs[index].returncode, out, err)

    try:
        for index, command in enumerate(commands):
            if index >= AT_ONCE:
                finish(index - AT_ONCE)
            if envs is not None:
                popen["env"] = envs[index]
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          **popen))
        for index in range(max(0, len(commands) - AT_ONCE), len(commands)):
            finish(index)
        return [done[i] for i in range(len(commands))]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
