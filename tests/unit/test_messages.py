"""End-user messages: English and Russian plurals, rounding of waits, Accept-Language negotiation."""

from __future__ import annotations

import pytest

from rampgate.core.messages import blocked_message, format_wait, negotiate_language, russian_plural


@pytest.mark.parametrize(
    ("seconds", "russian", "english"),
    [
        (1, "1 секунду", "1 second"),
        (2, "2 секунды", "2 seconds"),
        (4, "4 секунды", "4 seconds"),
        (5, "5 секунд", "5 seconds"),
        (11, "11 секунд", "11 seconds"),
        (12, "12 секунд", "12 seconds"),
        (14, "14 секунд", "14 seconds"),
        (21, "21 секунду", "21 seconds"),
        (22, "22 секунды", "22 seconds"),
        (59, "59 секунд", "59 seconds"),
        (60, "1 минуту", "1 minute"),
        (22 * 60, "22 минуты", "22 minutes"),
        (25 * 60, "25 минут", "25 minutes"),
        (31 * 60, "31 минуту", "31 minutes"),
        (3600, "1 час", "1 hour"),
        (2 * 3600, "2 часа", "2 hours"),
        (5 * 3600, "5 часов", "5 hours"),
        (21 * 3600, "21 час", "21 hours"),
    ],
)
def test_format_wait_plurals(seconds: int, russian: str, english: str) -> None:
    assert format_wait(seconds, "ru") == russian
    assert format_wait(seconds, "en") == english


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "1 second"),
        (0.001, "1 second"),
        (11.999, "12 seconds"),
        (12.0, "12 seconds"),
        (12.0000000001, "12 seconds"),
        (59.5, "1 minute"),
        (61, "2 minutes"),
        (3599, "1 hour"),
        (3601, "2 hours"),
    ],
)
def test_format_wait_rounds_up(seconds: float, text: str) -> None:
    """A wait is never shown shorter than it is, and float noise does not add a unit."""
    assert format_wait(seconds) == text


def test_russian_plural_rule() -> None:
    """Form "one" ends in 1 but not 11, "few" ends in 2-4 but not 12-14, "many" takes the rest."""
    forms = ("one", "few", "many")
    for number in range(1000):
        if number % 10 == 1 and number % 100 != 11:
            expected = "one"
        elif 2 <= number % 10 <= 4 and not 12 <= number % 100 <= 14:
            expected = "few"
        else:
            expected = "many"
        assert russian_plural(number, forms) == expected, number


@pytest.mark.parametrize(
    ("reason", "retry_after", "english", "russian"),
    [
        ("limited", 11.2, "Too many requests. Try again in 12 seconds.",
         "Слишком много запросов. Повторите попытку через 12 секунд."),
        ("limited", 0.5, "Too many requests. Try again in 1 second.",
         "Слишком много запросов. Повторите попытку через 1 секунду."),
        ("suspended", 3600.0, "Your account is temporarily restricted. Try again in 1 hour.",
         "Действия вашей учётной записи временно ограничены. Повторите попытку через 1 час."),
        ("store_error", 1.0, "The service is temporarily unavailable. Try again in 1 second.",
         "Сервис временно недоступен. Повторите попытку через 1 секунду."),
        ("exceeds_capacity", None, "This request is larger than the limit allows and cannot be accepted.",
         "Этот запрос превышает допустимый лимит и не может быть выполнен."),
    ],
)
def test_blocked_message_languages(reason: str, retry_after: float | None, english: str, russian: str) -> None:
    assert blocked_message(reason, retry_after, "en") == english
    assert blocked_message(reason, retry_after, "ru") == russian
    assert blocked_message(reason, retry_after, "de") == english


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("ru", "ru"),
        ("ru-RU", "ru"),
        ("RU-ru", "ru"),
        ("de", "en"),
        ("en-US,en;q=0.9,ru;q=0.8", "en"),
        ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", "ru"),
        ("en;q=0.5, ru;q=0.6", "ru"),
        ("fr-CH, fr;q=0.9, ru;q=0.8, *;q=0.5", "ru"),
        ("zh, ru;q=0.3", "ru"),
        ("ru;q=0", "en"),
        ("en;q=0, ru;q=0.1", "ru"),
        ("en;q=0, *", "ru"),
        ("*", "en"),
        ("*;q=0.5, ru;q=0.9", "ru"),
        ("ru;q=0.5, *", "en"),
        ("ru, en", "ru"),
        ("en, ru", "en"),
        ("en;q=0.8, ru;q=0.80", "en"),
        ("ru-RU;q=0.2, ru;q=0.9, en;q=0.5", "ru"),
        ("ru; q=0.8, en;q=0.7", "ru"),
        ("ru ;Q=0.9, en;q=0.8", "ru"),
        ("ru;q=0.9;foo=bar, en;q=0.8", "ru"),
        ("ru;q=1.000", "ru"),
        ("ru;q=abc", "en"),
        ("ru;q=1.5", "en"),
        ("ru;q=-1", "en"),
        ("ru;q=nan", "en"),
        (" , ru", "ru"),
    ],
)
def test_negotiate_language(header: str | None, language: str) -> None:
    assert negotiate_language(header) == language
