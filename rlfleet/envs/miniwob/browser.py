"""One headless Chromium + chromedriver per env, hardened for unattended training.

miniwob's `SeleniumInstance.create_driver` starts Chromium with three flags and no hook for more;
on a shared, offline machine Chromium also needs the flags below (no first-run, no background
networking or component updates that try the network, no /dev/shm), a fresh profile directory
per browser (so browsers never share state, and nothing is left behind: it is removed on close),
and explicit binary and driver paths (otherwise Selenium Manager tries to download a browser).

`Browser` keeps miniwob's task protocol (utterance, DOM info, raw reward from the page's `core`
object) and adds what recovery needs: the process ids of chromedriver and its Chromium, so a hung
browser can be killed by pid, and `alive()`.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile

from rlfleet.platform.errors import UserError

CHROME_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
    "--disable-features=Translate,MediaRouter,OptimizationHints", "--mute-audio",
    "--no-default-browser-check", "--metrics-recording-only", "--password-store=basic",
)
PROFILE_PREFIX = "rlfleet-miniwob-"


def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver): MINIWOB_CHROME_BINARY / MINIWOB_CHROMEDRIVER, else Debian's."""
    binary = os.environ.get("MINIWOB_CHROME_BINARY") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("MINIWOB_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    for what, path, pkg in (("Chromium", binary, "chromium"), ("chromedriver", driver, "chromium-driver")):
        if not os.path.isfile(path):
            raise UserError(f"miniwob: {what} not found at {path} (apt-get install {pkg}, or set "
                            f"MINIWOB_CHROME_BINARY and MINIWOB_CHROMEDRIVER)")
    return binary, driver


def _die_with_parent() -> None:
    """In the chromedriver child before exec: SIGKILL it when the thread that started it (inside
    the env's host actor) goes away, so a killed runner actor does not leave drivers behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def reap_orphans(root: str | None = None, min_age_s: float = 60.0) -> int:
    """Clean up after browsers whose host died without closing them (a killed actor): kill
    Chromium processes of our profiles whose chromedriver is gone (re-parented to init), and
    remove our profile directories that no live process uses and that are older than `min_age_s`
    (a browser being launched right now has a fresh one). Returns the directories removed."""
    import glob
    import time

    import psutil

    root = root or tempfile.gettempdir()
    prefix = f"--user-data-dir={os.path.join(root, PROFILE_PREFIX)}"
    in_use = set()
    for p in psutil.process_iter(["cmdline", "ppid"]):
        try:
            flag = next((c for c in p.info["cmdline"] or () if c.startswith(prefix)), None)
            if flag is None:
                continue
            if p.info["ppid"] == 1:
                p.kill()
            else:
                in_use.add(flag.split("=", 1)[1])
        except (psutil.Error, TypeError):
            pass
    removed = 0
    for path in glob.glob(os.path.join(root, PROFILE_PREFIX + "*")):
        try:
            if path not in in_use and time.time() - os.path.getmtime(path) > min_age_s:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    return removed


def _instance_class():
    from miniwob.selenium_instance import SeleniumInstance

    class Browser(SeleniumInstance):
        """A miniwob SeleniumInstance whose driver is started with the hardened flags."""

        def create_driver(self):
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service

            binary, driver_path = browser_paths()
            self.profile_dir = tempfile.mkdtemp(prefix=PROFILE_PREFIX, dir=self.profile_root)
            options = webdriver.ChromeOptions()
            options.binary_location = binary
            for flag in CHROME_FLAGS:
                options.add_argument(flag)
            options.add_argument(f"--user-data-dir={self.profile_dir}")
            options.add_argument(f"--window-size={self.window_width},{self.window_height}")
            self.service = Service(executable_path=driver_path, log_output=os.devnull,
                                   popen_kw={"preexec_fn": _die_with_parent})
            try:
                self.driver = webdriver.Chrome(service=self.service, options=options)
                self.driver.command_executor.client_config.timeout = self.command_timeout  # a hung driver raises
                self.driver.implicitly_wait(0)
                # a headless page never has window focus, so focus/blur events would not fire
                # (focus-text, and any task that listens to them)
                self.driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
                self.driver.get(self.url)
                self.inner_width, self.inner_height = self.driver.execute_script(
                    "return [window.innerWidth, window.innerHeight];")
                if not self.driver.execute_script("return typeof core !== 'undefined';"):
                    raise RuntimeError(f"MiniWoB page {self.url} did not load")
            except Exception:
                self.close()
                raise

        def pids(self) -> list[int]:
            """chromedriver's pid and those of this browser's Chromium processes. Chromium is found
            by its --user-data-dir (unique to this browser): after chromedriver dies, its Chromium
            children are reparented and no longer descend from it."""
            out = []
            proc = getattr(getattr(self, "service", None), "process", None)
            if proc is not None:
                out.append(proc.pid)
            profile = getattr(self, "profile_dir", None)
            if profile:
                import psutil

                flag = f"--user-data-dir={profile}"
                for p in psutil.process_iter(["cmdline"]):
                    try:
                        if flag in (p.info["cmdline"] or ()):
                            out.append(p.pid)
                    except (psutil.Error, TypeError):
                        pass
            return out

        def kill(self) -> None:
            """Hard stop by pid (a hung driver does not answer quit()), then remove the profile."""
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            proc = getattr(getattr(self, "service", None), "process", None)
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except Exception:
                    pass
            self._remove_profile()
            self.died = True

        def close(self):
            pids = self.pids()
            if getattr(self, "driver", None) is not None:
                try:
                    self.driver.quit()
                except Exception:
                    pass
            for pid in pids:  # whatever quit() left (e.g. after a crash)
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self._remove_profile()
            self.died = True

        def _remove_profile(self) -> None:
            path = getattr(self, "profile_dir", None)
            if path:
                shutil.rmtree(path, ignore_errors=True)
                if os.path.exists(path):  # Chromium may still be writing into it: once more
                    shutil.rmtree(path, ignore_errors=True)
                self.profile_dir = None

    return Browser


def launch_browser(task: str, data_mode: str = "train", command_timeout: float = 20.0, screenshots: bool = False,
                   profile_root: str | None = None):
    """Start a browser on MiniWoB task `task` (e.g. "click-button") and return it. Its profile is a
    fresh directory under `profile_root` (default: the system temp dir)."""
    reap_orphans(profile_root)
    cls = _instance_class()
    browser = cls(index=0, subdomain=task, headless=True, data_mode=data_mode)
    browser.profile_root = profile_root
    browser.command_timeout = command_timeout
    browser.record_screenshots = screenshots
    browser.create_driver()
    return browser
