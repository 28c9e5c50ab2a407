"""Settings read from the environment and `.env` (pydantic-settings).

Nothing here is built at import time: the composition root calls `load_settings()` once and
passes the object down.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

TXN_TYPES = ("SALE", "VOID", "REFUND", "PRE_AUTH", "AUTH_COMPLETE", "AUTH_VOID")


class Settings(BaseSettings):
    """Every knob an operator can turn; README.md documents each one."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Telegram
    bot_token: SecretStr | None = None
    telegram_api_base: str = "https://api.telegram.org"
    support_chat_id: int | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    webhook_path: str = "/telegram/webhook"

    # Storage
    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None

    # Conversation
    default_locale: str = "zh_CN"
    binding_code_ttl_hours: int = Field(default=72, ge=1)
    binding_max_attempts: int = Field(default=5, ge=1)
    binding_lock_minutes: int = Field(default=30, ge=1)
    wizard_idle_minutes: float = Field(default=15, gt=0)
    amount_max_mismatches: int = Field(default=3, ge=1)
    throttle_per_second: float = Field(default=3.0, gt=0)
    operator_cache_seconds: float = Field(default=30.0, ge=0)
    timezone: str = "Asia/Shanghai"

    # Review rules (money in integer fen)
    reprint_window_days: int = Field(default=180, ge=1)
    auto_approve_max_fen: int = Field(default=500_000, ge=0)
    auto_approve_max_age_days: int = Field(default=30, ge=0)
    auto_approve_max_reprints: int = Field(default=2, ge=0)
    auto_approve_txn_types: Annotated[tuple[str, ...], NoDecode] = (
        "SALE",
        "VOID",
        "REFUND",
        "AUTH_COMPLETE",
    )
    documents_required_above_fen: int = Field(default=5_000_000, ge=0)
    review_sla_minutes: int = Field(default=30, ge=1)
    run_scheduler: bool = True
    # The process running the scheduler renews its lease every third of this; another
    # process with RUN_SCHEDULER on takes over once the lease has expired.
    scheduler_lease_seconds: float = Field(default=30, gt=0)

    # Notifications: WeChat Official Account API (a stand-in in tests)
    wechat_api_base: str = "https://api.weixin.qq.com"

    # Support hours (local time in `timezone`)
    support_hours_start: time = time(9, 0)
    support_hours_end: time = time(21, 0)
    # Agents' replies reach the merchant signed with the agent's name.
    support_sign_replies: bool = True

    # Receipts
    receipt_font_path: Path | None = None

    @field_validator("auto_approve_txn_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(v.strip().upper() for v in value.split(",") if v.strip())
        if isinstance(value, (list, tuple)):
            unknown = [v for v in value if v not in TXN_TYPES]
            if unknown:
                raise ValueError(f"unknown transaction types: {', '.join(unknown)}")
            return tuple(value)
        return value

    @property
    def effective_database_url(self) -> str:
        """`DATABASE_URL`, or a SQLite file in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'reprint.db').as_posix()}"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; keyword overrides win (tests, the demo)."""
    return Settings(**overrides)  # type: ignore[arg-type]
