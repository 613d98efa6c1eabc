"""End-user sentences for blocked decisions, in English and Russian."""

from __future__ import annotations

import re
from math import ceil

SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "ru")
DEFAULT_LANGUAGE = "en"

# Russian nouns take one of three forms after a number: one (1, 21, 31 …),
# few (2–4, 22–24 …) and many (0, 5–20, 25–30 …).
_RU_UNITS = {
    "second": ("секунду", "секунды", "секунд"),
    "minute": ("минуту", "минуты", "минут"),
    "hour": ("час", "часа", "часов"),
}
_EN_UNITS = {"second": ("second", "seconds"), "minute": ("minute", "minutes"), "hour": ("hour", "hours")}


def russian_plural(number: int, forms: tuple[str, str, str]) -> str:
    """Pick the Russian form of a noun that follows ``number``."""
    tens = number % 100
    units = number % 10
    if 11 <= tens <= 14:
        return forms[2]
    if units == 1:
        return forms[0]
    if 2 <= units <= 4:
        return forms[1]
    return forms[2]


def _split_duration(seconds: float) -> tuple[int, str]:
    """Round a wait up to the unit a person would use: seconds, minutes or hours."""
    whole = max(1, ceil(seconds - 1e-9))
    if whole < 60:
        return whole, "second"
    minutes = ceil(whole / 60)
    if minutes < 60:
        return minutes, "minute"
    return ceil(whole / 3600), "hour"


def format_wait(seconds: float, language: str = DEFAULT_LANGUAGE) -> str:
    """Return ``"12 seconds"`` or ``"12 секунд"`` for a wait of ``seconds``."""
    number, unit = _split_duration(seconds)
    if language == "ru":
        return f"{number} {russian_plural(number, _RU_UNITS[unit])}"
    singular, plural = _EN_UNITS[unit]
    return f"{number} {singular if number == 1 else plural}"


def blocked_message(reason: str, retry_after: float | None, language: str = DEFAULT_LANGUAGE) -> str:
    """Return the sentence shown to the end user whose request was blocked."""
    if language not in SUPPORTED_LANGUAGES:
        language = DEFAULT_LANGUAGE

    if reason == "exceeds_capacity" or retry_after is None:
        if language == "ru":
            return "Этот запрос превышает допустимый лимит и не может быть выполнен."
        return "This request is larger than the limit allows and cannot be accepted."

    wait = format_wait(retry_after, language)
    if reason == "suspended":
        if language == "ru":
            return f"Действия вашей учётной записи временно ограничены. Повторите попытку через {wait}."
        return f"Your account is temporarily restricted. Try again in {wait}."
    if reason == "store_error":
        if language == "ru":
            return f"Сервис временно недоступен. Повторите попытку через {wait}."
        return f"The service is temporarily unavailable. Try again in {wait}."
    if language == "ru":
        return f"Слишком много запросов. Повторите попытку через {wait}."
    return f"Too many requests. Try again in {wait}."


def negotiate_language(accept_language: str | None) -> str:
    """Choose a supported language from an ``Accept-Language`` header value.

    Follows the q-values (``ru;q=0.9, en;q=0.8``); a tag matches on its primary
    subtag, so ``ru-RU`` selects Russian, and ``*`` stands for every language
    the header does not name. Among equal q-values the earlier entry wins.
    Entries with an invalid q-value are ignored, and English is the default.
    """
    if not accept_language:
        return DEFAULT_LANGUAGE

    # language -> (quality, position of the entry)
    named: dict[str, tuple[float, int]] = {}
    wildcard: tuple[float, int] | None = None
    for position, entry in enumerate(accept_language.split(",")):
        tag, _, parameters = entry.partition(";")
        tag = tag.strip().lower()
        quality = _quality(parameters)
        if not tag or quality is None:
            continue
        if tag == "*":
            if wildcard is None:
                wildcard = (quality, position)
            continue
        language = tag.split("-")[0]
        if language in SUPPORTED_LANGUAGES and (language not in named or quality > named[language][0]):
            named[language] = (quality, position)

    best_language = DEFAULT_LANGUAGE
    best_rank: tuple[float, int] | None = None
    for language in SUPPORTED_LANGUAGES:
        rank = named.get(language, wildcard)
        if rank is None or rank[0] <= 0:
            continue
        if best_rank is None or rank[0] > best_rank[0] or (rank[0] == best_rank[0] and rank[1] < best_rank[1]):
            best_language, best_rank = language, rank
    return best_language


_QUALITY_RE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def _quality(parameters: str) -> float | None:
    """Return the q-value in ``;``-separated parameters: 1.0 when absent, None when invalid."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "q":
            value = value.strip()
            return float(value) if _QUALITY_RE.fullmatch(value) else None
    return 1.0
