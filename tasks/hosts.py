"""hosts: the first contact with a host."""

from invoke import task

from swarmhub import settings as env_settings
from swarmhub import trust as host_trust


@task(positional=["host"], help={"yes": "trust the keys shown without asking (checked already)"})
def trust(c, host, yes=False):
    """Show a host's SSH key fingerprints and add them to known_hosts after a yes."""
    settings = env_settings.load()

    def confirm(question: str) -> bool:
        if yes:
            print(question + " yes (--yes)")
            return True
        return host_trust.ask(question)

    print(host_trust.trust(settings, host, confirm))
