"""`bootkit serve` without --transport serves where another process can reach it (#21: the
in-process bus it used to default to is reachable by nothing outside the serving process)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bootkit.cli.serve import _default_transport

PRODUCTS = Path(__file__).resolve().parents[1] / "examples" / "products"


def _args(personality=None, product=None):
    return argparse.Namespace(personality=personality, product=product, transport=None)


@pytest.mark.parametrize("personality,expected", [("dfu", "usbip"), ("hid", "usbip"), ("msc", "usbip"),
                                                  ("printer", "usbip"), ("midi", "usbip"), ("isp", "usbip"),
                                                  ("cdc", "pty")])
def test_usbip_or_a_pty_by_personality(personality, expected):
    assert _default_transport(_args(personality)) == expected


def test_a_product_profile_picks_by_its_personality():
    assert _default_transport(_args(product=str(PRODUCTS / "rp2040-uf2.toml"))) == "usbip"
    assert _default_transport(_args(product=str(PRODUCTS / "arduino-leonardo.toml"))) == "pty"


def test_unknown_input_falls_through_to_its_own_error(capsys):
    from bootkit.cli import main

    assert _default_transport(_args(product="missing.toml")) == "usbip"
    assert main(["serve", "floppy", "--chip", "atmega32u4"]) == 2
    assert "floppy" in capsys.readouterr().err
