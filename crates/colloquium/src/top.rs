//! `colloquium top`: a live terminal view of a running node — sources, lanes, pipelines and
//! their stages, sinks — with rates, lag, errors and the control-plane level, from two
//! successive `GET /api/overview` answers. `/` filters by name, `q` quits.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use colloquium_api::overview::Overview;
use ratatui::crossterm::event::{self, Event as Input, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::{DefaultTerminal, Frame};
use serde_json::Value;

use crate::cli::TopArgs;

/// Runs `colloquium top` until `q`, Esc or Ctrl-C.
pub async fn run(args: &TopArgs) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("colloquium top draws on a terminal; for a script, read GET /api/overview");
    }
    if args.interval < Duration::from_millis(100) {
        bail!("--interval: at least 100ms");
    }
    let api = &args.api;
    let client = crate::client::http_client(&api.credentials)?;
    let url = format!("{}/api/overview", api.url.trim_end_matches('/'));
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel(16);
    // Keys are read on a thread of their own: crossterm's reading blocks.
    std::thread::spawn(move || {
        while let Ok(input) = event::read() {
            if keys_tx.blocking_send(input).is_err() {
                break;
            }
        }
    });
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let mut view = View {
        url: api.url.clone(),
        filter: args.filter.clone().unwrap_or_default(),
        ..View::default()
    };
    let result = run_loop(
        &mut terminal,
        &client,
        &url,
        args.interval,
        &mut view,
        &mut keys,
    )
    .await;
    ratatui::restore();
    result
}

async fn run_loop(
    terminal: &mut DefaultTerminal,
    client: &reqwest::Client,
    url: &str,
    interval: Duration,
    view: &mut View,
    keys: &mut tokio::sync::mpsc::Receiver<Input>,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let taken = fetch(client, url).await;
                view.update(taken);
            }
            input = keys.recv() => {
                let Some(input) = input else { return Ok(()) };
                if view.key(&input) {
                    return Ok(());
                }
            }
        }
        terminal.draw(|frame| view.draw(frame))?;
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Overview, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            answer["error"].as_str().unwrap_or("")
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not an overview: {e}"))
}

/// What is on screen: the last two overviews (for rates), the filter, the last error.
#[derive(Default)]
struct View {
    url: String,
    now: Option<Overview>,
    before: Option<Overview>,
    error: Option<String>,
    filter: String,
    typing: bool,
}

impl View {
    fn update(&mut self, taken: Result<Overview, String>) {
        match taken {
            Ok(overview) => {
                self.before = self.now.replace(overview);
                self.error = None;
            }
            Err(error) => self.error = Some(error),
        }
    }

    /// Handles a key; returns whether to quit.
    fn key(&mut self, input: &Input) -> bool {
        let Input::Key(key) = input else {
            return false;
        };
        if key.kind != KeyEventKind::Press {
            return false;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return true;
        }
        if self.typing {
            match key.code {
                KeyCode::Enter => self.typing = false,
                KeyCode::Esc => {
                    self.typing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return false;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('/') => {
                self.typing = true;
                self.filter.clear();
                false
            }
            _ => false,
        }
    }

    fn shown(&self, name: &str) -> bool {
        self.filter.is_empty() || name.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// Per second, between the two last overviews (`None` until there are two).
    fn rate(&self, pick: impl Fn(&Overview) -> Option<u64>) -> Option<f64> {
        let (now, before) = (self.now.as_ref()?, self.before.as_ref()?);
        let seconds = now.at.checked_sub(before.at)? as f64 / 1000.0;
        let (a, b) = (pick(now)?, pick(before)?);
        (seconds > 0.0).then(|| a.saturating_sub(b) as f64 / seconds)
    }

    fn draw(&self, frame: &mut Frame) {
        let Some(now) = &self.now else {
            let text = self.error.as_deref().unwrap_or("connecting…");
            frame.render_widget(
                Paragraph::new(format!("{}: {text}", self.url)),
                frame.area(),
            );
            return;
        };
        let level = now.control["level"].as_str().unwrap_or("?");
        let level_style = match level {
            "HEALTHY" => Style::new().fg(Color::Green),
            "ELEVATED" => Style::new().fg(Color::Yellow),
            _ => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        };
        let mut header = vec![
            "colloquium top ".bold(),
            format!("{}  ", self.url).into(),
            "level ".into(),
            ratatui::text::Span::styled(level.to_owned(), level_style),
            format!(
                "  config v{}  stored {}  taps {}",
                now.config_version,
                human_bytes(now.storage.bytes),
                now.taps
            )
            .into(),
        ];
        if let Some(error) = &self.error {
            header.push(format!("  ({error})").red());
        }
        let footer = if self.typing {
            format!("filter: {}▏ (Enter: keep, Esc: clear)", self.filter)
        } else if self.filter.is_empty() {
            "q quit  / filter".to_owned()
        } else {
            format!("q quit  / filter  [filter: {}]", self.filter)
        };

        let sources = self.sources(now);
        let lanes = self.lanes(now);
        let pipelines = self.pipelines(now);
        let sinks = self.sinks(now);
        let heights = [
            Constraint::Length(1),
            Constraint::Length(sources.1 + 3),
            Constraint::Length(lanes.1 + 3),
            Constraint::Min(pipelines.1.min(4) + 3),
            Constraint::Length(sinks.1 + 3),
            Constraint::Length(1),
        ];
        let [top, a, b, c, d, bottom] = Layout::vertical(heights).areas(frame.area());
        frame.render_widget(Line::from(header), top);
        frame.render_widget(sources.0, a);
        frame.render_widget(lanes.0, b);
        frame.render_widget(pipelines.0, c);
        frame.render_widget(sinks.0, d);
        frame.render_widget(Line::from(footer).dim(), bottom);
    }

    fn sources(&self, now: &Overview) -> (Table<'static>, u16) {
        let rows: Vec<Row> = (now.sources.iter())
            .filter(|s| self.shown(&s.name))
            .map(|s| {
                let by = |f: fn(&colloquium_api::overview::SourceView) -> u64| {
                    rate(self.rate(|o| o.sources.iter().find(|x| x.name == s.name).map(f)))
                };
                Row::new([
                    s.name.clone(),
                    s.kind.clone(),
                    by(|x| x.received),
                    by(|x| x.accepted),
                    by(|x| x.rejected),
                    s.accepted.to_string(),
                ])
            })
            .collect();
        table(
            rows,
            ["source", "type", "in/s", "stored/s", "refused/s", "stored"],
            &[20, 8, 12, 12, 12, 14],
            "Sources",
        )
    }

    fn lanes(&self, now: &Overview) -> (Table<'static>, u16) {
        let lanes = now.control["lanes"].as_array().cloned().unwrap_or_default();
        let rows: Vec<Row> = (lanes.iter())
            .map(|lane| {
                let name = lane["lane"].as_str().unwrap_or("?").to_owned();
                let admitted = |o: &Overview| {
                    let lanes = o.control["lanes"].as_array()?;
                    let it = lanes.iter().find(|l| l["lane"] == lane["lane"])?;
                    it["admitted"].as_u64()
                };
                let shed: u64 = (lane["shed"].as_object().into_iter().flatten())
                    .filter_map(|(_, v)| v.as_u64())
                    .sum();
                Row::new([
                    name,
                    format!("{}/{}", lane["depth"], lane["capacity"]),
                    rate(self.rate(admitted)),
                    shed.to_string(),
                ])
            })
            .collect();
        table(
            rows,
            ["lane", "depth", "admitted/s", "shed"],
            &[20, 16, 12, 12],
            "Lanes",
        )
    }

    fn pipelines(&self, now: &Overview) -> (Table<'static>, u16) {
        let mut rows = Vec::new();
        for p in &now.pipelines {
            let stages: Vec<_> = (p.stages.iter())
                .filter(|s| self.shown(&p.name) || self.shown(&s.id))
                .collect();
            if !self.shown(&p.name) && stages.is_empty() {
                continue;
            }
            let find = |o: &Overview| {
                o.pipelines
                    .iter()
                    .find(|x| x.name == p.name)
                    .map(|x| x.routed)
            };
            // The mean latency over the interval, from the histogram's sum and count.
            let latency = self
                .now
                .as_ref()
                .zip(self.before.as_ref())
                .and_then(|(a, b)| {
                    let (pa, pb) = (
                        a.pipelines.iter().find(|x| x.name == p.name)?,
                        b.pipelines.iter().find(|x| x.name == p.name)?,
                    );
                    let count = pa.latency_count.checked_sub(pb.latency_count)?;
                    (count > 0)
                        .then(|| (pa.latency_seconds_sum - pb.latency_seconds_sum) / count as f64)
                });
            let style = if p.stopped || p.lag_seconds > 30.0 {
                Style::new().fg(Color::Red)
            } else if p.lag_seconds > 1.0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            rows.push(
                Row::new([
                    p.name.clone(),
                    if p.stopped {
                        "stopped".into()
                    } else {
                        "pipeline".into()
                    },
                    rate(self.rate(find)),
                    String::new(),
                    String::new(),
                    format!("{} ({:.1}s)", p.lag_events, p.lag_seconds),
                    latency.map_or("-".into(), |l| format!("{:.1}ms", l * 1000.0)),
                ])
                .style(style.add_modifier(Modifier::BOLD)),
            );
            for s in stages {
                let stage = |f: fn(&colloquium_api::overview::StageView) -> u64| {
                    move |o: &Overview| {
                        let p = o.pipelines.iter().find(|x| x.name == p.name)?;
                        p.stages.iter().find(|x| x.id == s.id).map(f)
                    }
                };
                rows.push(
                    Row::new([
                        format!("  └ {}", s.id),
                        s.kind.clone(),
                        rate(self.rate(stage(|x| x.events_in))),
                        rate(self.rate(stage(|x| x.events_out))),
                        s.failed.to_string(),
                        String::new(),
                        String::new(),
                    ])
                    .style(if s.failed > 0 {
                        Style::new().fg(Color::Yellow)
                    } else {
                        Style::new()
                    }),
                );
            }
        }
        table(
            rows,
            [
                "pipeline / stage",
                "type",
                "in/s",
                "out/s",
                "failed",
                "lag",
                "latency",
            ],
            &[24, 10, 12, 12, 10, 18, 10],
            "Pipelines",
        )
    }

    fn sinks(&self, now: &Overview) -> (Table<'static>, u16) {
        let rows: Vec<Row> = (now.sinks.iter())
            .filter(|s| self.shown(&s.name))
            .map(|s| {
                let sent = |o: &Overview| o.sinks.iter().find(|x| x.name == s.name).map(|x| x.sent);
                Row::new([
                    s.name.clone(),
                    s.kind.clone(),
                    rate(self.rate(sent)),
                    s.sent.to_string(),
                ])
            })
            .collect();
        table(
            rows,
            ["sink", "type", "sent/s", "sent"],
            &[20, 10, 12, 14],
            "Sinks",
        )
    }
}

/// A bordered table with a bold header, and how many rows it has (for its height).
fn table<'a, const N: usize>(
    rows: Vec<Row<'a>>,
    header: [&'a str; N],
    widths: &[u16],
    title: &'a str,
) -> (Table<'a>, u16) {
    let n = u16::try_from(rows.len()).unwrap_or(u16::MAX);
    let table = Table::new(rows, widths.iter().map(|w| Constraint::Length(*w)))
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(Block::bordered().title(title));
    (table, n)
}

fn rate(per_second: Option<f64>) -> String {
    match per_second {
        None => "-".into(),
        Some(r) if r >= 1_000_000.0 => format!("{:.2}M", r / 1e6),
        Some(r) if r >= 10_000.0 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.0}"),
    }
}

fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
