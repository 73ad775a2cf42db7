"""Independent command lines run side by side: each child spends seconds importing TensorFlow on one core,
so a test that checks several invocations of a CLI starts them together instead of one after another."""
import subprocess


def run_side_by_side(commands: list[list[str]], timeout: float, envs: list[dict] | None = None,
                     **popen) -> list[subprocess.CompletedProcess]:
    """Starts every command at once (text mode, stdout and stderr captured, ``envs[i]`` the environment of
    command i when given, ``popen`` passed on to each ``Popen``) and returns their ``CompletedProcess`` in
    the given order; on a timeout or any error the children still running are killed."""
    procs = []
    try:
        for index, command in enumerate(commands):
            if envs is not None:
                popen["env"] = envs[index]
            procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          **popen))
        done = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        return done
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
