//! Container logs as the CRI runtime writes them (one file per container instance, lines
//! `<RFC3339Nano> <stdout|stderr> <P|F> <content>`, `P` for a partial line continued by the
//! next), read back for `kubectl logs` with its options: `--tail`, `--since`/`--since-time`,
//! `--timestamps`, `--limit-bytes` and `-f`.

use std::io::{BufRead, Seek};
use std::path::Path;
use std::time::Duration;

/// One decoded log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The runtime's timestamp (RFC 3339 with nanoseconds).
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The content including its trailing newline (absent for an unfinished partial line).
    pub content: Vec<u8>,
}

/// Parse one CRI log record.
pub fn parse(record: &[u8]) -> Option<(String, String, bool, Vec<u8>)> {
    let record = record.strip_suffix(b"\n").unwrap_or(record);
    let mut parts = record.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let stream = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"").to_vec();
    Some((ts, stream, tag == b"P", content))
}

/// Decode a whole log file into lines (joining partial records).
pub fn read_lines(path: &Path) -> std::io::Result<Vec<Line>> {
    let file = std::fs::File::open(path)?;
    let mut lines = Vec::new();
    let mut pending: Option<Line> = None;
    for record in std::io::BufReader::new(file).split(b'\n') {
        let record = record?;
        let Some((timestamp, stream, partial, content)) = parse(&record) else {
            continue;
        };
        let line = pending.get_or_insert_with(|| Line {
            timestamp,
            stream,
            content: Vec::new(),
        });
        line.content.extend_from_slice(&content);
        if !partial {
            line.content.push(b'\n');
            lines.extend(pending.take());
        }
    }
    lines.extend(pending);
    Ok(lines)
}

/// `kubectl logs` options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<jiff::Timestamp>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<usize>,
}

fn render(line: &Line, opts: &Options, out: &mut Vec<u8>) {
    if opts.timestamps {
        out.extend_from_slice(line.timestamp.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&line.content);
}

fn keep(line: &Line, opts: &Options) -> bool {
    match (&opts.since, line.timestamp.parse::<jiff::Timestamp>()) {
        (Some(since), Ok(t)) => t >= *since,
        _ => true,
    }
}

/// Everything currently in the file that the options select, and the byte offset read to.
pub fn snapshot(path: &Path, opts: &Options) -> std::io::Result<(Vec<u8>, u64)> {
    let len = std::fs::metadata(path)?.len();
    let mut lines: Vec<Line> = read_lines(path)?
        .into_iter()
        .filter(|l| keep(l, opts))
        .collect();
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for l in &lines {
        render(l, opts, &mut out);
    }
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit);
    }
    Ok((out, len))
}

/// Stream the log into `send`: what is there, then (when following) what gets appended
/// until `running()` says the container stopped and the file is drained. `send` returns
/// false when the client went away.
pub async fn stream(
    path: &Path,
    opts: &Options,
    mut send: impl FnMut(Vec<u8>) -> bool,
    running: impl Fn() -> bool,
) -> std::io::Result<()> {
    let (initial, mut offset) = snapshot(path, opts)?;
    let mut sent = initial.len();
    if !initial.is_empty() && !send(initial) {
        return Ok(());
    }
    if !opts.follow {
        return Ok(());
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut idle_after_stop = 0;
    loop {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(offset);
        if len > offset {
            let mut file = std::fs::File::open(path)?;
            file.seek(std::io::SeekFrom::Start(offset))?;
            let mut buf = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(&mut file, len - offset),
                &mut buf,
            )?;
            offset = len;
            pending.extend_from_slice(&buf);
            let mut out = Vec::new();
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let record: Vec<u8> = pending.drain(..=pos).collect();
                if let Some((timestamp, stream, partial, mut content)) = parse(&record) {
                    if !partial {
                        content.push(b'\n');
                    }
                    let line = Line {
                        timestamp,
                        stream,
                        content,
                    };
                    if keep(&line, opts) {
                        render(&line, opts, &mut out);
                    }
                }
            }
            if let Some(limit) = opts.limit_bytes {
                out.truncate(limit.saturating_sub(sent));
            }
            sent += out.len();
            if !out.is_empty() && !send(out) {
                return Ok(());
            }
            if opts.limit_bytes.is_some_and(|l| sent >= l) {
                return Ok(());
            }
            idle_after_stop = 0;
            continue;
        }
        if !running() {
            // Give the runtime a moment to flush the last lines.
            idle_after_stop += 1;
            if idle_after_stop > 3 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The end of a log for a termination message (`FallbackToLogsOnError`): at most `lines`
/// lines and `bytes` bytes.
pub fn tail_for_message(path: &Path, lines: usize, bytes: usize) -> String {
    let opts = Options {
        tail_lines: Some(lines),
        ..Default::default()
    };
    let Ok((out, _)) = snapshot(path, &opts) else {
        return String::new();
    };
    let start = out.len().saturating_sub(bytes);
    String::from_utf8_lossy(&out[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(lines: &[&str]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), lines.join("\n") + "\n").unwrap();
        f
    }

    #[test]
    fn partial_records_join_into_lines() {
        let f = write(&[
            "2026-01-01T00:00:01.000000001Z stdout F hello",
            "2026-01-01T00:00:02.000000000Z stderr P par",
            "2026-01-01T00:00:02.100000000Z stderr F tial",
        ]);
        let lines = read_lines(f.path()).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].content, b"hello\n");
        assert_eq!(lines[1].content, b"partial\n");
        assert_eq!(lines[1].stream, "stderr");
    }

    #[test]
    fn options_select_and_decorate() {
        let f = write(&[
            "2026-01-01T00:00:01Z stdout F one",
            "2026-01-01T00:00:02Z stdout F two",
            "2026-01-01T00:00:03Z stdout F three",
        ]);
        let tail = Options {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(snapshot(f.path(), &tail).unwrap().0, b"two\nthree\n");
        let since = Options {
            since: Some("2026-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(snapshot(f.path(), &since).unwrap().0, b"two\nthree\n");
        let ts = Options {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(
            snapshot(f.path(), &ts).unwrap().0,
            b"2026-01-01T00:00:03Z three\n"
        );
        let limit = Options {
            limit_bytes: Some(5),
            ..Default::default()
        };
        assert_eq!(snapshot(f.path(), &limit).unwrap().0, b"one\nt");
    }

    #[tokio::test]
    async fn following_picks_up_appended_lines_until_the_container_stops() {
        let f = write(&["2026-01-01T00:00:01Z stdout F one"]);
        let path = f.path().to_owned();
        let appender = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap();
                writeln!(file, "2026-01-01T00:00:02Z stdout F two").unwrap();
            })
        };
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let opts = Options {
            follow: true,
            ..Default::default()
        };
        stream(
            &path,
            &opts,
            |b| {
                got.extend(b);
                true
            },
            || started.elapsed() < Duration::from_millis(400),
        )
        .await
        .unwrap();
        appender.await.unwrap();
        assert_eq!(got, b"one\ntwo\n");
    }

    #[test]
    fn termination_messages_fall_back_to_the_log_tail() {
        let f = write(&[
            "2026-01-01T00:00:01Z stderr F boom",
            "2026-01-01T00:00:02Z stderr F fatal: it broke",
        ]);
        assert_eq!(
            tail_for_message(f.path(), 80, 2048),
            "boom\nfatal: it broke\n"
        );
        assert_eq!(tail_for_message(f.path(), 80, 9), "it broke\n");
    }
}
