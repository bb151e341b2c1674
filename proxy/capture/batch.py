"""Pure `iptables-restore` batches for apply and cleanup, given the nat table as saved."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.capture.rules import BUILTIN_JUMPS, CHAINS


@dataclass(frozen=True, slots=True)
class NatState:
    """The parts of `iptables-save -t nat` that matter to us."""

    chains: tuple[str, ...]
    rules: tuple[str, ...]

    def has_table(self) -> bool:
        return bool(self.chains)


def parse_nat_save(text: str) -> NatState:
    """Read the `*nat` section of iptables-save output; anything else is ignored."""
    chains: list[str] = []
    rules: list[str] = []
    in_nat = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif not in_nat or not line or line.startswith("#"):
            continue
        elif line == "COMMIT":
            in_nat = False
        elif line.startswith(":"):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            rules.append(line)
    return NatState(tuple(chains), tuple(rules))


def _chain_and_target(rule: str) -> tuple[str, str | None]:
    words = rule.split()
    chain = words[1] if len(words) > 1 else ""
    target = words[words.index("-j") + 1] if "-j" in words[:-1] else None
    return chain, target


def _our_builtin_rules(state: NatState) -> list[str]:
    """Rules in chains we do not own that jump into ours: the only things we add there."""
    found = []
    for rule in state.rules:
        chain, target = _chain_and_target(rule)
        if chain not in CHAINS and target in CHAINS:
            found.append(rule)
    return found


def _wrap(lines: list[str]) -> str:
    return "\n".join(["*nat", *lines, "COMMIT", ""])


def fresh_batch(rules: list[str]) -> str:
    """The batch for an empty table: what --dry-run prints."""
    return _wrap([f":{chain} - [0:0]" for chain in CHAINS] + rules)


def apply_batch(rules: list[str], state: NatState) -> str:
    """One batch for `iptables-restore --noflush` that leaves exactly one copy of `rules`.

    Declaring a chain that exists flushes it under --noflush, so our chains are refilled in
    place. Jumps from built-in chains cannot be flushed that way: a wanted jump that is
    already there is kept where it is, and any other jump into our chains is deleted.
    """
    wanted_jumps = {
        (chain, target)
        for rule in rules
        for chain, target in [_chain_and_target(rule)]
        if (chain, target) in BUILTIN_JUMPS
    }
    kept: set[tuple[str, str | None]] = set()
    deletions: list[str] = []
    for rule in _our_builtin_rules(state):
        key = _chain_and_target(rule)
        if key in wanted_jumps and key not in kept:
            kept.add(key)
        else:
            deletions.append("-D" + rule[2:])
    body = [rule for rule in rules if _chain_and_target(rule) not in kept]
    return _wrap([f":{chain} - [0:0]" for chain in CHAINS] + deletions + body)


def cleanup_batch(state: NatState) -> str | None:
    """The batch that removes our jumps and chains, or None when none of them is there."""
    ours = [chain for chain in CHAINS if chain in state.chains]
    deletions = ["-D" + rule[2:] for rule in _our_builtin_rules(state)]
    if not ours and not deletions:
        return None
    # Flush all before deleting any: PF_OUTPUT refers to PF_IN_REDIRECT and PF_REDIRECT.
    flushes = [f"-F {chain}" for chain in ours]
    removals = [f"-X {chain}" for chain in ours]
    return _wrap(deletions + flushes + removals)
