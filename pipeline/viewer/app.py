"""The co2cast forecast viewer, a Streamlit page (``make viewer`` or ``co2cast view``).

Pick a series and a year range up to the horizon; see the history, the champion's forecast
with its 80 % and 95 % bands, the candidates' backtest scores and, when a scorecard exists,
earlier forecasts against what happened. Everything shown is read through
:mod:`pipeline.viewer.data`, i.e. from what the pipeline published, hashes checked.
"""

from __future__ import annotations

import re
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from pipeline.errors import Co2castError
from pipeline.viewer import data

HISTORY = "History"
FORECAST = "Forecast (champion)"
#: Shown first when it is published: the study's series.
STUDY_SERIES = "canada.co2_per_capita"
#: How long the series list is reused before the store is listed again (seconds).
LIST_TTL = 30
#: What makes Markdown (CommonMark, GitHub's autolinks, Streamlit's ``:red[…]``, ``$…$``) of plain
#: text: escaped in text read from the store before a markdown element shows it. Parentheses alone
#: make nothing (a link needs the ``]`` before them).
MARKUP = re.compile(r"([\\`*_{}\[\]<>#+\-.!|~$:&])")
#: Where GitHub's autolink literals start (``http://``, ``https://``, ``www.``, an e-mail's ``@``).
#: Streamlit's remark-gfm finds them in the text after the escapes are resolved, so escaping cannot
#: stop them: an invisible word joiner (U+2060) after each breaks the pattern.
AUTOLINK = re.compile(r"https?:(?=//)|www(?=\.)|@", re.IGNORECASE)
WORD_JOINER = "\u2060"


def _literal(text: object) -> str:
    """Text read from the store (an entity name, a manifest field) for a markdown element, shown as written.

    An entity name comes from the source release; ``[name](https://…)``, ``![](https://…)`` or a bare
    ``https://…`` in it must not become a link, or an image the browser fetches from elsewhere, on the page.
    """
    return MARKUP.sub(r"\\\1", AUTOLINK.sub(lambda m: m.group() + WORD_JOINER, str(text)))


def _message(text: object) -> str:
    """A one-line message for ``st.error``/``st.warning``/``st.info``, shown exactly as the CLI prints it.

    These elements render Markdown, and a message names what it read from the store: a series id
    (a folder name), a store key, the vintage or a file key from a manifest edited by hand. All of
    it is shown as written (a ``[x](https://…)`` in it is no link), backticks included; an alert
    element gets ``icon=""``, or it would take a leading emoji of the message for its icon.
    """
    return _literal(" ".join(str(text).split()))


@st.cache_data(ttl=LIST_TTL, show_spinner=False)
def _published(store_uri: str) -> data.Published:
    # ``store_uri`` is the cache key: one list per configured store.
    return data.list_published(data.open_store())


def _fail(error: Exception) -> None:
    """Say what went wrong in one line and draw nothing else."""
    if isinstance(error, data.NothingPublished):
        st.info(_message(error), icon="")
    else:
        st.error(_message(error), icon="")
    st.stop()


def _name_unreadable(published: data.Published) -> None:
    """One warning per series whose ``latest.json`` cannot be read; nothing else is drawn when no series can be."""
    for series_id, why in published.unreadable.items():
        st.warning(_message(f"{series_id} is left out of the list: {why}"), icon="")
    if not published.series:
        st.stop()


def _pick_series(published: list[data.PublishedSeries]) -> data.PublishedSeries:
    with st.sidebar:
        st.header("Series")
        variables = sorted({s.variable for s in published})
        labels = {v: next(s for s in published if s.variable == v) for v in variables}
        variable = st.selectbox(
            "Variable",
            ["all", *variables],
            format_func=lambda v: "All variables" if v == "all" else f"{labels[v].variable_name} ({labels[v].units or 'units unknown'})",
            key="variable",
        )
        kind = st.radio("Entities", ["all", "countries", "aggregates"], format_func=str.capitalize, horizontal=True, key="kind")
        choices = [
            s
            for s in published
            if (variable == "all" or s.variable == variable) and (kind == "all" or (kind == "aggregates") == s.aggregate)
        ]
        if not choices:
            st.info("No published series matches these filters.")
            st.stop()
        by_id = {s.series_id: s for s in choices}
        ids = list(by_id)
        default = ids.index(STUDY_SERIES) if STUDY_SERIES in by_id else 0
        chosen = st.selectbox(
            "Country or aggregate (type to search)", ids, index=default, format_func=lambda sid: by_id[sid].label, key="series"
        )
        st.caption(f"{len(published)} published series in `{data.open_store().uri()}`")
    return by_id[chosen]


def _pick_range(view: data.SeriesView) -> tuple[int, int]:
    first, last, as_of = view.first_year, view.horizon_end, int(view.manifest["as_of_year"])
    with st.sidebar:
        st.header("Years")
        start = st.number_input("Start year", min_value=first, max_value=last, value=max(first, as_of - 50), step=1, key="start")
        end = st.number_input(f"End year (up to {last})", min_value=first, max_value=last, value=last, step=1, key="end")
    return int(start), int(end)


def _band(frame: pd.DataFrame, low: str, high: str, opacity: float, title: str) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_area(opacity=opacity, color="#4c78a8")
        .encode(x="year:Q", y=alt.Y(f"{low}:Q"), y2=f"{high}:Q", tooltip=[alt.Tooltip("year:Q", format="d"), low, high])
        .properties(title=title)
    )


def _chart(view: data.SeriesView, shown: pd.DataFrame, overlay: pd.DataFrame | None, start: int, end: int) -> alt.LayerChart:
    """The history, the champion's forecast with its bands and any overlaid candidates over ``start..end``.

    The x axis is the chosen range, not the years that hold values: a range inside a gap of the
    history (a release with no values for some early years) is drawn empty.
    """
    units = view.series.units
    history = shown[shown["kind"] == "history"].assign(line=HISTORY)
    forecast = shown[shown["kind"] == "forecast"]
    # The forecast line starts at the last actual so history and forecast join up (no joint for a range of history only:
    # the whole frame would bring a second "value" column into the lines).
    joint = history.tail(1 if len(forecast) else 0)[["year", "value"]].rename(columns={"value": "mean"})
    mean = pd.concat([joint, forecast[["year", "mean"]]], ignore_index=True).assign(line=FORECAST)
    lines = pd.concat([history[["year", "value", "line"]], mean.rename(columns={"mean": "value"})], ignore_index=True)
    domain, colors = [HISTORY, FORECAST], ["#222222", "#1f5fa8"]
    if overlay is not None and len(overlay):
        overlay = overlay.assign(line=lambda f: "candidate: " + f["family"].astype(str)).rename(columns={"mean": "value"})
        lines = pd.concat([lines, overlay[["year", "value", "line"]]], ignore_index=True)
        extra = sorted(overlay["line"].unique())
        domain += extra
        colors += ["#e45756", "#54a24b", "#f58518", "#b279a2", "#9d755d", "#72b7b2"][: len(extra)]
    x = alt.X("year:Q", title="year", axis=alt.Axis(format="d"), scale=alt.Scale(domain=[start, end]))
    layers: list[Any] = []
    if len(forecast):
        layers.append(_band(forecast, "lo_95", "hi_95", 0.18, "").encode(x=x))
        layers.append(_band(forecast, "lo_80", "hi_80", 0.32, "").encode(x=x))
    layers.append(
        alt.Chart(lines)
        .mark_line(strokeWidth=2)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=f"{view.series.variable_name} ({units})" if units else view.series.variable_name),
            color=alt.Color("line:N", title=None, scale=alt.Scale(domain=domain, range=colors), legend=alt.Legend(orient="top-left")),
            strokeDash=alt.condition(alt.datum.line == HISTORY, alt.value([1, 0]), alt.value([6, 3])),
            tooltip=[alt.Tooltip("year:Q", format="d"), "line:N", alt.Tooltip("value:Q", format=".3f")],
        )
    )
    provisional = history[history["provisional"]]
    if len(provisional):
        marks = provisional.assign(note="provisional")
        base = alt.Chart(marks).encode(x=x, y="value:Q")
        layers.append(base.mark_point(shape="diamond", size=90, filled=True, color="#d62728"))
        layers.append(base.mark_text(dy=-12, color="#d62728").encode(text="note:N"))
    return alt.layer(*layers).properties(height=420).interactive(bind_y=False)


def _scorecard_chart(scorecard: pd.DataFrame, units: str) -> alt.LayerChart:
    base = alt.Chart(scorecard).encode(x=alt.X("year:Q", axis=alt.Axis(format="d")))
    past = base.mark_line(point=True, strokeDash=[5, 3]).encode(
        y=alt.Y("mean:Q", title=units or "value"), color=alt.Color("as_of_year:O", title="forecast as of")
    )
    actual = (
        alt.Chart(scorecard.drop_duplicates("year"))
        .mark_line(color="#222222", strokeWidth=2.5)
        .encode(x="year:Q", y="actual:Q", tooltip=[alt.Tooltip("year:Q", format="d"), "actual:Q"])
    )
    return alt.layer(past, actual).properties(height=300)


def main() -> None:
    """Draw the page."""
    st.set_page_config(page_title="co2cast forecast viewer", page_icon="🌍", layout="wide")
    st.title("co2cast forecast viewer")

    try:
        store_uri = data.open_store().uri()
        published = _published(store_uri)
    except Co2castError as error:  # every known failure (data.ViewerError, data.StoreUnreachable…)
        _fail(error)
    _name_unreadable(published)
    series = _pick_series(published.series)
    try:
        view = data.load_series(data.open_store(), series)
    except Co2castError as error:  # every known failure (data.ViewerError, data.StoreUnreachable…)
        _fail(error)
    start, end = _pick_range(view)

    manifest = view.manifest
    st.subheader(_literal(series.label))
    provisional = view.provisional_year
    cols = st.columns([1.1, 1.6, 0.8, 0.9])
    # A metric's value is Markdown too.
    cols[0].metric("Champion", _literal(f"v{manifest['model_version']} · {manifest.get('model_family', '?')}"))
    cols[1].metric("Vintage", _literal(manifest["vintage"]))
    cols[2].metric("As of year", str(manifest["as_of_year"]))
    cols[3].metric("Provisional year", str(provisional) if provisional else "none")
    st.caption(
        f"Champion model **{_literal(manifest['model_name'])}** version **{_literal(manifest['model_version'])}** "
        f"({_literal(manifest.get('model_family', '?'))}), trained on vintage {_literal(manifest['vintage'])} with data up to "
        f"{manifest['as_of_year']}; published {_literal(manifest.get('published_at', ''))}. "
        "Shaded: 80 % (darker) and 95 % (lighter) prediction intervals. "
        + (f"The last year of history ({provisional}) is provisional: the next release usually revises it." if provisional else "")
    )

    if start > end:
        st.warning(f"The start year {start} is after the end year {end}: choose a start year before the end year.")
        st.stop()
    shown = data.shown_range(view, start, end)

    overlay = None
    if view.candidates is not None:
        if st.toggle("Overlay the candidates' forecasts", key="overlay"):
            candidates = view.candidates
            overlay = candidates[(candidates["year"] >= start) & (candidates["year"] <= end)]
    if shown.empty:
        st.info(f"The release has no values for this series in {start}–{end}: choose other years.", icon="")
    st.altair_chart(_chart(view, shown, overlay, start, end), width="stretch")

    st.download_button(
        f"Download {start}–{end} as CSV",
        data.range_csv(shown, view),
        file_name=f"{series.series_id}_{start}-{end}.csv",
        mime="text/csv",
        key="download",
    )
    with st.expander(f"The numbers, {start}–{end}"):
        st.dataframe(shown, hide_index=True, width="stretch")

    st.subheader("Candidates on the same backtest")
    if len(view.scores):
        st.dataframe(view.scores, hide_index=True, width="stretch")
        st.caption(
            "Rolling-origin backtest on identical windows; lower is better: compare each model with the naive row "
            "(MASE is scaled by the in-sample one-step naive error, so naive's own is not 1)."
        )
    else:
        st.info("The published files include no backtest scores for this forecast.")
    if view.candidates is None:
        st.info(
            "Only the champion's forecast is published for this series: the candidates' own forecasts are not among "
            "the published files, so they cannot be overlaid. Their backtest scores are in the table above."
        )

    st.subheader("Track record")
    if view.scorecard_problem is not None:
        st.warning(_message(view.scorecard_problem), icon="")
    elif view.scorecard is None:
        st.info("No scorecard yet: it appears once earlier published forecasts can be compared with actuals that arrived since.")
    else:
        st.altair_chart(_scorecard_chart(view.scorecard, series.units), width="stretch")
        st.dataframe(view.scorecard, hide_index=True, width="stretch")


main()
