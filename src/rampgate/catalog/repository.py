"""Reads and writes of flags, policies, trust profiles and the config-change history."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from rampgate.catalog import schema
from rampgate.core.flags import Flag, check_flag_config
from rampgate.core.names import check_action, check_actor_id, check_actor_type, check_level
from rampgate.core.names import check_percentage, check_tier
from rampgate.core.policies import Policy, check_policy
from rampgate.core.snapshot import CatalogSnapshot
from rampgate.core.trust import TrustProfile
from rampgate.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

_UNSET: Any = object()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """Attach UTC to the naive datetimes that SQLite returns."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def isoformat(value: datetime | None) -> str | None:
    value = as_utc(value)
    if value is None:
        return None
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def flag_from_row(row: Any) -> Flag:
    return Flag(row.flag_name, bool(row.enabled), int(row.rollout_percentage), dict(row.config or {}))


def policy_from_row(row: Any) -> Policy:
    return Policy(
        scope=row.scope,
        action=row.action,
        limit_value=int(row.limit_value),
        window_seconds=int(row.window_seconds),
        algorithm=row.algorithm,
        tier=row.tier,
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        burst=None if row.burst is None else int(row.burst),
        cost_per_action=int(row.cost_per_action),
        fail_mode=row.fail_mode,
        enabled=bool(row.enabled),
        config_id=int(row.config_id),
    )


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    return {
        "config_id": policy.config_id,
        "policy": policy.name,
        "scope": policy.scope,
        "tier": policy.tier,
        "actor_type": policy.actor_type,
        "actor_id": policy.actor_id,
        "action": policy.action,
        "algorithm": policy.algorithm,
        "limit": policy.limit_value,
        "window_seconds": policy.window_seconds,
        "burst": policy.burst,
        "cost_per_action": policy.cost_per_action,
        "fail_mode": policy.fail_mode,
        "enabled": policy.enabled,
    }


def flag_to_dict(flag: Flag) -> dict[str, Any]:
    return {
        "name": flag.name,
        "enabled": flag.enabled,
        "percentage": flag.percentage,
        "action_percentages": flag.action_percentages,
        "config": flag.config,
    }


def trust_to_dict(profile: TrustProfile) -> dict[str, Any]:
    return {
        "actor_type": profile.actor_type,
        "actor_id": profile.actor_id,
        "tier": profile.risk_tier,
        "enforcement_level": profile.enforcement_level,
        "trust_score": profile.trust_score,
        "signals": profile.signals,
    }


def trust_from_row(row: Any) -> TrustProfile:
    score = row.trust_score
    return TrustProfile(
        actor_type=row.actor_type,
        actor_id=row.actor_id,
        risk_tier=row.risk_tier,
        enforcement_level=row.enforcement_level,
        trust_score=None if score is None else float(Decimal(score)),
        signals=dict(row.signals or {}),
    )


class Catalog:
    """The catalog database behind one engine.

    Every write runs in one transaction with its config-change record, so a
    change is either applied and recorded or not applied at all. ``changed_by``
    and ``via`` record who made it and through which path (``cli``, ``api``,
    ``console``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    # -- reading ---------------------------------------------------------

    def load_snapshot(self, version: int = 0) -> CatalogSnapshot:
        """Read flags, policies and trust profiles in one transaction."""
        with self.engine.connect() as connection:
            flags = [flag_from_row(r) for r in connection.execute(sa.select(schema.feature_flags))]
            policies = [policy_from_row(r) for r in connection.execute(sa.select(schema.rate_limit_configs))]
            trust = [trust_from_row(r) for r in connection.execute(sa.select(schema.trust_profiles))]
        return CatalogSnapshot(flags, policies, trust, version)

    def get_flag(self, name: str) -> Flag:
        with self.engine.connect() as connection:
            return self._get_flag(connection, name)

    def list_flags(self) -> list[Flag]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(schema.feature_flags).order_by(schema.feature_flags.c.flag_name))
            return [flag_from_row(r) for r in rows]

    def _get_flag(self, connection: Connection, name: str) -> Flag:
        row = connection.execute(
            sa.select(schema.feature_flags).where(schema.feature_flags.c.flag_name == name)
        ).first()
        if row is None:
            raise NotFound(f"flag {name!r} not found; `rampgate flag show` lists the flags")
        return flag_from_row(row)

    def list_policies(self, action: str | None = None, tier: str | None = None) -> list[Policy]:
        table = schema.rate_limit_configs
        query = sa.select(table).order_by(table.c.action, table.c.scope, table.c.tier, table.c.actor_id)
        if action is not None:
            query = query.where(table.c.action == action)
        if tier is not None:
            query = query.where(table.c.tier == tier)
        with self.engine.connect() as connection:
            return [policy_from_row(r) for r in connection.execute(query)]

    def list_trust(self, limit: int = 1000) -> list[TrustProfile]:
        table = schema.trust_profiles
        query = sa.select(table).order_by(table.c.updated_at.desc()).limit(limit)
        with self.engine.connect() as connection:
            return [trust_from_row(r) for r in connection.execute(query)]

    def list_changes(self, limit: int = 100, entity: str | None = None) -> list[dict[str, Any]]:
        table = schema.config_changes
        query = sa.select(table).order_by(table.c.change_id.desc()).limit(limit)
        if entity is not None:
            query = query.where(table.c.entity == entity)
        with self.engine.connect() as connection:
            return [
                {
                    "change_id": r.change_id,
                    "at": isoformat(r.at),
                    "changed_by": r.changed_by,
                    "via": r.via,
                    "entity": r.entity,
                    "key": r.entity_key,
                    "before": r.before,
                    "after": r.after,
                }
                for r in connection.execute(query)
            ]

    # -- writing ---------------------------------------------------------

    def set_flag(
        self,
        name: str,
        *,
        enabled: bool | None = None,
        percentage: int | None = None,
        action_percentages: dict[str, int | None] | None = None,
        config: dict[str, Any] | None = None,
        changed_by: str = "unknown",
        via: str = "cli",
        create: bool = False,
    ) -> Flag:
        """Change a flag; only the given fields change. Return the flag as stored.

        ``action_percentages`` is merged into the stored overrides; an action
        mapped to None loses its override and follows ``percentage`` again.
        """
        if percentage is not None:
            check_percentage(percentage)
        if action_percentages:
            for action, value in action_percentages.items():
                check_action(action, f"action_percentages.{action}")
                if value is not None:
                    check_percentage(value, f"percentage for {action}")
        if config is not None:
            config = check_flag_config(config)

        table = schema.feature_flags
        with self.engine.begin() as connection:
            try:
                before: Flag | None = self._get_flag(connection, name)
            except NotFound:
                if not create:
                    raise
                before = None

            # A flag being created starts from the defaults of a new row.
            current = before if before is not None else Flag(name, False, 0, {})
            new_config = dict(config if config is not None else current.config)
            if action_percentages:
                merged = dict(new_config.get("action_percentages") or {})
                governed = new_config.get("actions")
                for action, value in action_percentages.items():
                    if value is None:
                        merged.pop(action, None)
                        continue
                    if governed is not None and action not in governed:
                        raise InvalidInput(
                            f"action_percentages.{action}", action, f"an action flag {name!r} governs: " + ", ".join(governed)
                        )
                    merged[action] = value
                new_config["action_percentages"] = merged
            after = Flag(
                name,
                enabled if enabled is not None else current.enabled,
                percentage if percentage is not None else current.percentage,
                new_config,
            )
            values = {
                "enabled": after.enabled,
                "rollout_percentage": after.percentage,
                "config": after.config,
                "updated_at": utcnow(),
            }
            if before is None:
                connection.execute(sa.insert(table).values(flag_name=name, created_at=utcnow(), **values))
            else:
                connection.execute(sa.update(table).where(table.c.flag_name == name).values(**values))
            self.record_change(
                connection, changed_by, via, "flag", name,
                None if before is None else flag_to_dict(before), flag_to_dict(after),
            )
        logger.info(
            "flag.changed",
            extra={"flag": name, "enabled": after.enabled, "percentage": after.percentage, "via": via},
        )
        return after

    def set_policy(self, policy: Policy, *, changed_by: str = "unknown", via: str = "cli") -> Policy:
        """Insert or update the policy with the same scope, tier, actor and action."""
        check_policy(policy)
        table = schema.rate_limit_configs
        key = _policy_key_clause(policy)
        values = {
            "algorithm": policy.algorithm,
            "limit_value": policy.limit_value,
            "window_seconds": policy.window_seconds,
            "burst": policy.burst,
            "cost_per_action": policy.cost_per_action,
            "fail_mode": policy.fail_mode,
            "enabled": policy.enabled,
            "updated_at": utcnow(),
        }
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(table).where(key)).first()
            before = None if row is None else policy_from_row(row)
            if before is None:
                result = connection.execute(
                    sa.insert(table)
                    .values(
                        scope=policy.scope,
                        tier=policy.tier,
                        actor_type=policy.actor_type,
                        actor_id=policy.actor_id,
                        action=policy.action,
                        created_at=utcnow(),
                        **values,
                    )
                    .returning(table.c.config_id)
                )
                config_id = int(result.scalar_one())
            else:
                connection.execute(sa.update(table).where(key).values(**values))
                config_id = int(row.config_id)  # type: ignore[union-attr]
            after = policy_from_row(connection.execute(sa.select(table).where(table.c.config_id == config_id)).one())
            self.record_change(
                connection, changed_by, via, "policy", policy.name,
                None if before is None else policy_to_dict(before), policy_to_dict(after),
            )
        logger.info(
            "policy.changed",
            extra={"policy": after.name, "limit": after.limit_value, "window_seconds": after.window_seconds, "via": via},
        )
        return after

    def delete_policy(self, policy: Policy, *, changed_by: str = "unknown", via: str = "cli") -> None:
        table = schema.rate_limit_configs
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(table).where(_policy_key_clause(policy))).first()
            if row is None:
                raise NotFound(f"policy {policy.name!r} not found; `rampgate limits list` shows the policies")
            connection.execute(sa.delete(table).where(table.c.config_id == row.config_id))
            self.record_change(connection, changed_by, via, "policy", policy.name, policy_to_dict(policy_from_row(row)), None)

    def set_trust(
        self,
        actor_type: str,
        actor_id: str,
        *,
        tier: str | None = None,
        level: str | None = None,
        trust_score: float | None = None,
        changed_by: str = "unknown",
        via: str = "cli",
    ) -> TrustProfile:
        """Create or update an actor's trust profile; only the given fields change."""
        check_actor_type(actor_type)
        check_actor_id(actor_id)
        if tier is not None:
            check_tier(tier)
        if level is not None:
            check_level(level)
        if trust_score is not None and not 0 <= trust_score <= 100:
            raise InvalidInput("trust_score", trust_score, "a number from 0 to 100")

        table = schema.trust_profiles
        key = sa.and_(table.c.actor_type == actor_type, table.c.actor_id == actor_id)
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(table).where(key)).first()
            before = None if row is None else trust_from_row(row)
            # An actor without a profile starts from tier B at level E0.
            current = before if before is not None else TrustProfile(actor_type, actor_id)
            after = TrustProfile(
                actor_type,
                actor_id,
                tier or current.risk_tier,
                level or current.enforcement_level,
                trust_score if trust_score is not None else current.trust_score,
                current.signals,
            )
            values = {
                "risk_tier": after.risk_tier,
                "enforcement_level": after.enforcement_level,
                "trust_score": after.trust_score,
                "updated_at": utcnow(),
            }
            if before is None:
                connection.execute(
                    sa.insert(table).values(actor_type=actor_type, actor_id=actor_id, signals={}, **values)
                )
            else:
                connection.execute(sa.update(table).where(key).values(**values))
            self.record_change(
                connection, changed_by, via, "trust", f"{actor_type}:{actor_id}",
                None if before is None else trust_to_dict(before), trust_to_dict(after),
            )
        logger.info("trust.changed", extra={"actor_type": actor_type, "tier": after.risk_tier, "via": via})
        return after

    def delete_trust(self, actor_type: str, actor_id: str, *, changed_by: str = "unknown", via: str = "cli") -> None:
        # Checked before the query, because PostgreSQL rejects a NUL in a text parameter with a DataError.
        check_actor_type(actor_type)
        check_actor_id(actor_id)

        table = schema.trust_profiles
        key = sa.and_(table.c.actor_type == actor_type, table.c.actor_id == actor_id)
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(table).where(key)).first()
            if row is None:
                raise NotFound(f"no trust profile for {actor_type}:{actor_id}")
            connection.execute(sa.delete(table).where(key))
            self.record_change(
                connection, changed_by, via, "trust", f"{actor_type}:{actor_id}", trust_to_dict(trust_from_row(row)), None
            )

    @staticmethod
    def record_change(
        connection: Connection,
        changed_by: str,
        via: str,
        entity: str,
        key: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        """Add a row to the change history, unless ``before`` and ``after`` are equal (a no-op write)."""
        if before == after:
            return
        connection.execute(
            sa.insert(schema.config_changes).values(
                at=utcnow(), changed_by=changed_by, via=via, entity=entity, entity_key=key, before=before, after=after
            )
        )


def _policy_key_clause(policy: Policy) -> Any:
    table = schema.rate_limit_configs

    def matches(column: Any, value: str | None) -> Any:
        return column.is_(None) if value is None else column == value

    return sa.and_(
        table.c.scope == policy.scope,
        matches(table.c.tier, policy.tier),
        matches(table.c.actor_type, policy.actor_type),
        matches(table.c.actor_id, policy.actor_id),
        table.c.action == policy.action,
    )
