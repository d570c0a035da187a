"""Ansible's linear strategy run through Mitogen (ansible.cfg: strategy = mitogen_linear).

Mitogen (mitogen-hq/mitogen, pinned in requirements-dev.txt) keeps one Python interpreter per host for
the whole run and sends each module to it, instead of starting a new interpreter through a new
connection for every task. Its own strategy files are meant to be named by path inside the installed
package; this file lets ansible.cfg name them relative to the project instead.
"""

from ansible_mitogen import loaders, strategy

_Linear = loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(strategy.StrategyMixin, _Linear):
    """The linear strategy with Mitogen's connection and module execution."""
