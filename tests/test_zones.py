"""Zones: containment by the box's bottom centre, polygon validation with messages that say
what to fix, and per-track occupancy with label filters and minimum dwell."""

from __future__ import annotations

import dataclasses

import pytest

from edge.association import Box
from edge.errors import ConfigError
from edge.zones import Zone, ZoneOccupancy, ZoneSettings, anchor, build_zones, points_problems

SQUARE = ((0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8))
# An L: the square's top-right quarter cut away.
L_SHAPE = ((0.2, 0.2), (0.5, 0.2), (0.5, 0.5), (0.8, 0.5), (0.8, 0.8), (0.2, 0.8))


def box_at(x: float, y: float, w: float = 0.1, h: float = 0.3) -> Box:
    """A box whose bottom centre is (x, y)."""
    return (x - w / 2, y - h, x + w / 2, y)


@pytest.mark.parametrize(
    ("points", "inside", "outside"),
    [
        (SQUARE, [(0.5, 0.5), (0.21, 0.79)], [(0.1, 0.5), (0.5, 0.9), (0.81, 0.5)]),
        (((0.5, 0.1), (0.9, 0.9), (0.1, 0.9)), [(0.5, 0.5), (0.5, 0.85)], [(0.2, 0.2)]),
        (L_SHAPE, [(0.3, 0.3), (0.7, 0.7), (0.3, 0.7)], [(0.7, 0.3), (0.6, 0.45)]),
        (tuple(reversed(L_SHAPE)), [(0.3, 0.3), (0.7, 0.7)], [(0.7, 0.3)]),
    ],
)
def test_points_inside_and_outside(
    points: tuple[tuple[float, float], ...],
    inside: list[tuple[float, float]],
    outside: list[tuple[float, float]],
) -> None:
    """Convex and concave polygons, either winding, hold the points inside them and not
    those outside (the concave notch of an L is outside)."""
    zone = Zone("z", points)
    assert all(zone.contains(x, y) for x, y in inside)
    assert not any(zone.contains(x, y) for x, y in outside)


def test_an_object_is_in_a_zone_by_its_bottom_centre() -> None:
    """A box whose top half lies in the zone but whose bottom centre is below it is not in
    the zone; one standing in it with its head above the zone is."""
    zone = Zone("path", ((0.0, 0.6), (1.0, 0.6), (1.0, 0.9), (0.0, 0.9)))
    assert not zone.holds((0.4, 0.5, 0.6, 0.95))  # covers the zone, feet below it
    assert zone.holds((0.4, 0.1, 0.6, 0.7))  # mostly above it, feet in it
    assert anchor((0.4, 0.1, 0.6, 0.7)) == pytest.approx((0.5, 0.7))


def test_a_zone_up_to_the_frame_edge_holds_objects_cut_off_by_it() -> None:
    """Boxes clipped at the frame's bottom or right edge (ending at 1.0) are in a zone whose
    corners lie on that edge."""
    bottom_right = Zone("corner", ((0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)))
    assert bottom_right.holds((0.6, 0.7, 0.8, 1.0))
    assert bottom_right.holds((0.9, 0.6, 1.0, 0.9))
    assert bottom_right.holds((0.95, 0.7, 1.0, 1.0))


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[0.1, 0.1], [0.5, 0.5]], "needs at least 3 corners [[x, y], ...], got 2"),
        ("0.1,0.1", "must be a list of [x, y] corners"),
        ([[0.1, 0.1], [0.5], [0.5, 0.5]], "corner 1 must be an [x, y] pair of numbers"),
        ([[0.1, 0.1], ["a", 0.2], [0.5, 0.5]], "corner 1 must be an [x, y] pair of numbers"),
        ([[0.1, 0.1], [True, 0.2], [0.5, 0.5]], "corner 1 must be an [x, y] pair of numbers"),
        (
            [[0.1, 0.1], [1.5, 0.2], [0.5, 0.5]],
            "corner 1 [1.5, 0.2] is outside the frame: x and y are fractions of its width",
        ),
        ([[0.1, 0.1], [0.1, 0.1], [0.5, 0.5]], "corners 0 and 1 are the same point"),
        ([[0.1, 0.1], [0.3, 0.3], [0.5, 0.5]], "encloses no area"),
        (
            [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]],
            "edges 0-1 and 2-3 cross: list the corners in order around the zone",
        ),
        ([[0.5, 0.5]] * 101, "has 101 corners; use at most 100"),
    ],
)
def test_bad_polygons_are_refused_with_a_clear_message(points: object, message: str) -> None:
    """Each kind of unusable polygon is named in words that say what to change."""
    problems = points_problems(points)
    assert any(message in p for p in problems), problems


def test_a_polygon_touching_itself_is_refused() -> None:
    """A polygon whose boundary passes through one of its own corners (two loops joined at
    a point) is refused like a crossing one."""
    points = [[0.1, 0.1], [0.5, 0.5], [0.9, 0.1], [0.9, 0.9], [0.5, 0.5], [0.1, 0.9]]
    assert any("cross" in p for p in points_problems(points))


def test_every_problem_is_reported_with_its_path() -> None:
    """build_zones reports all problems of all zones at once, each with its path, plus names
    used twice."""
    settings = [
        ZoneSettings("drive", ((0.1, 0.1), (0.5, 0.1)), min_dwell_s=-1.0),
        ZoneSettings("bad name!", SQUARE),
        ZoneSettings("drive", SQUARE, labels=("person", "")),
    ]
    with pytest.raises(ConfigError) as info:
        build_zones(settings, path="cameras[0].zones")
    problems = info.value.problems
    assert any(p.startswith("cameras[0].zones[0].points: needs at least 3") for p in problems)
    assert any(p.startswith("cameras[0].zones[0].min_dwell_s: must be within") for p in problems)
    assert any(p.startswith("cameras[0].zones[1].name: must be 1-64 characters") for p in problems)
    assert any(p.startswith("cameras[0].zones[2].labels:") for p in problems)
    assert "cameras[0].zones: zone name 'drive' is used more than once" in " ".join(problems)
    assert len(problems) == 5


def test_valid_settings_build_zones() -> None:
    """Valid settings (lists from TOML included) give zones with float corners, their label
    filter and dwell."""
    (zone,) = build_zones(
        [ZoneSettings("drive", ([0, 0.5], [1, 0.5], [1, 1]), ("car",), 2)]  # type: ignore[arg-type]
    )
    assert zone.points == ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0))
    assert zone.labels == frozenset({"car"}) and zone.min_dwell_s == 2.0
    assert zone.counts("car") and not zone.counts("person")


def test_an_invalid_zone_cannot_be_built() -> None:
    """Zone itself refuses a bad polygon, naming the zone."""
    with pytest.raises(ConfigError, match="zone 'x': points: needs at least 3"):
        Zone("x", ((0.1, 0.1), (0.2, 0.2)))


def test_zone_settings_describe_every_key() -> None:
    """Every zone setting has a description for the configuration reference, and name and
    points are required."""
    fields = {f.name: f for f in dataclasses.fields(ZoneSettings)}
    assert all(f.metadata["help"] for f in fields.values())
    assert fields["name"].default is dataclasses.MISSING
    assert fields["points"].default is dataclasses.MISSING


def test_occupancy_applies_the_label_filter() -> None:
    """A zone with a labels filter holds only objects with those labels; others are in the
    unfiltered zones only."""
    zones = [Zone("drive", SQUARE, frozenset({"car"})), Zone("all", SQUARE)]
    occ = ZoneOccupancy(zones)
    assert occ.update(1, "car", box_at(0.5, 0.5), 0.0) == ("drive", "all")
    assert occ.update(2, "person", box_at(0.5, 0.5), 0.0) == ("all",)


def test_occupancy_waits_for_the_dwell_and_leaves_at_once() -> None:
    """With min_dwell_s = 1 an object counts in the zone only after 1 s inside, leaving
    counts at once, and a short visit (in, out, in) starts the dwell again."""
    occ = ZoneOccupancy([Zone("drive", SQUARE, min_dwell_s=1.0)])
    inside, outside = box_at(0.5, 0.5), box_at(0.5, 0.95)
    seq = [
        (0.0, inside, ()),
        (0.5, inside, ()),
        (0.9, outside, ()),
        (1.2, inside, ()),  # the dwell starts again here
        (2.1, inside, ()),
        (2.2, inside, ("drive",)),
        (3.0, outside, ()),
    ]
    for ts, box, want in seq:
        assert occ.update(7, "car", box, ts) == want, ts
    assert occ.current(7) == ()


def test_occupancy_keeps_and_forgets_per_track() -> None:
    """current() reports a track's zones from its latest update; forget() drops them and its
    dwell timers."""
    occ = ZoneOccupancy([Zone("drive", SQUARE, min_dwell_s=0.5)])
    occ.update(1, "car", box_at(0.5, 0.5), 0.0)
    occ.update(1, "car", box_at(0.5, 0.5), 0.6)
    assert occ.current(1) == ("drive",)
    occ.forget(1)
    assert occ.current(1) == ()
    assert occ.update(1, "car", box_at(0.5, 0.5), 0.7) == ()  # dwell timer started afresh
    assert ZoneOccupancy([]).update(1, "car", box_at(0.5, 0.5), 0.0) == ()
