//! Batch export off the request path: a finished span goes into a bounded queue without
//! waiting (a full queue drops it, counted), and one thread sends batches to the exporter.
//! The SDK's own batch processor counts its drops only in a log line at shutdown; this one
//! counts them in `m2m_auth_proxy_tracing_spans_dropped_total{reason}`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use crate::metrics;

/// How long a flush waits for the export thread.
const FLUSH_WAIT: Duration = Duration::from_secs(3);

/// `OTEL_BSP_*`, with the specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSettings {
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub export_timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            schedule_delay: Duration::from_millis(5000),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            export_timeout: Duration::from_millis(30000),
        }
    }
}

enum Message {
    Span(Box<SpanData>),
    /// Export what is queued now, then answer.
    Flush(SyncSender<()>),
}

#[derive(Debug)]
pub struct BatchProcessor {
    queue: SyncSender<Message>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl BatchProcessor {
    pub fn start<E: SpanExporter + 'static>(exporter: E, settings: BatchSettings) -> Self {
        let (queue, rx) = mpsc::sync_channel(settings.max_queue_size.max(1));
        let thread = std::thread::Builder::new()
            .name("otel-export".into())
            .spawn(move || run(exporter, rx, settings))
            .map_err(|e| log::error!("tracing: cannot start the export thread: {e}"))
            .ok();
        BatchProcessor {
            queue,
            thread: Mutex::new(thread),
        }
    }
}

impl SpanProcessor for BatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.queue.try_send(Message::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::tracing_spans_dropped("queue_full", 1),
            Err(TrySendError::Disconnected(_)) => metrics::tracing_spans_dropped("shutdown", 1),
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        let (tx, rx) = mpsc::sync_channel(1);
        self.queue
            .try_send(Message::Flush(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        // bounded: a stuck collector must not hold a shutdown
        rx.recv_timeout(FLUSH_WAIT)
            .map_err(|_| OTelSdkError::Timeout(FLUSH_WAIT))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = self.queue.try_send(Message::Flush(tx));
        let _ = rx.recv_timeout(timeout);
        drop(self.thread.lock().map(|mut t| t.take()));
        Ok(())
    }
}

fn run<E: SpanExporter>(exporter: E, rx: Receiver<Message>, settings: BatchSettings) {
    let mut batch: Vec<SpanData> = Vec::new();
    let mut due = Instant::now() + settings.schedule_delay;
    loop {
        let wait = due.saturating_duration_since(Instant::now());
        let flush = match rx.recv_timeout(wait) {
            Ok(Message::Span(span)) => {
                batch.push(*span);
                if batch.len() < settings.max_export_batch_size {
                    continue;
                }
                None
            }
            Ok(Message::Flush(done)) => Some(done),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                export(&exporter, &mut batch, settings.export_timeout);
                return;
            }
        };
        // a flush also takes what is still queued behind it
        while flush.is_some() && batch.len() < settings.max_queue_size {
            match rx.try_recv() {
                Ok(Message::Span(span)) => batch.push(*span),
                Ok(Message::Flush(other)) => drop(other.try_send(())),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(settings.max_export_batch_size));
            export(&exporter, &mut batch, settings.export_timeout);
            batch = rest;
        }
        if let Some(done) = flush {
            let _ = done.try_send(());
        }
        due = Instant::now() + settings.schedule_delay;
    }
}

/// One export; a batch the collector did not take is counted as dropped.
fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, timeout: Duration) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let started = Instant::now();
    let result = futures_executor::block_on(exporter.export(std::mem::take(batch)));
    match result {
        Ok(()) if started.elapsed() <= timeout => {}
        Ok(()) => log::debug!("tracing: an export took longer than {timeout:?}"),
        Err(e) => {
            metrics::tracing_spans_dropped("export_failed", n);
            log::debug!("tracing: export of {n} span(s) failed: {e}");
        }
    }
}
