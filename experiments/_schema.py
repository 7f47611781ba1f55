"""Register every method's config dataclass as a Hydra schema: conf/method/<name>.yaml extends it."""

from hydra.core.config_store import ConfigStore

from pbs.methods import available_methods, get_method


def register_schemas() -> None:
    cs = ConfigStore.instance()
    for name in available_methods():
        cs.store(group="schema/method", name=name, node=get_method(name).config_cls)
