//! Simulated PLCs: each demo machine behind its own Modbus TCP server, so the
//! demo's data travels the real path (device → Modbus → connector → contract
//! → broker). [`PlcPlant`] ticks the same [`PlantSim`] the MQTT simulator
//! uses and writes each machine's [`MachineSnapshot`] into its register bank
//! following [`REGISTER_MAP`]; [`serve_plc`] answers Modbus TCP requests
//! (function codes 1–6, 15, 16 and 43/14 device identification) from it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{Clock, MachineSnapshot, MachineState, PlantSim, SimulatedMachine, Tag};

/// Registers (and coils) of each table a simulated PLC exposes.
pub const BANK_SIZE: usize = 128;

/// Registers of the `state_reason` string (two ASCII bytes each).
pub const REASON_REGISTERS: u16 = 16;

/// Where each tag lives in a simulated PLC's **input registers** (function
/// code 4), big-endian bytes and words: (tag, address, type, registers).
pub const REGISTER_MAP: [(Tag, u16, &str, u16); 7] = [
    (Tag::State, 0, "uint16", 1),
    (Tag::GoodCount, 1, "uint32", 2),
    (Tag::RejectCount, 3, "uint32", 2),
    (Tag::Speed, 5, "float32", 2),
    (Tag::Temperature, 7, "float32", 2),
    (Tag::Energy, 9, "float64", 4),
    (Tag::StateReason, 13, "string", REASON_REGISTERS),
];

/// The `state` register's codes: the index in [`MachineState::ALL`].
pub fn state_code(state: MachineState) -> u16 {
    MachineState::ALL
        .iter()
        .position(|s| *s == state)
        .and_then(|i| u16::try_from(i).ok())
        .unwrap_or(u16::MAX)
}

/// One PLC's memory.
#[derive(Debug, Clone)]
pub struct RegisterBank {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub holding: Vec<u16>,
    pub input: Vec<u16>,
}

impl Default for RegisterBank {
    fn default() -> Self {
        Self {
            coils: vec![false; BANK_SIZE],
            discrete_inputs: vec![false; BANK_SIZE],
            holding: vec![0; BANK_SIZE],
            input: vec![0; BANK_SIZE],
        }
    }
}

impl RegisterBank {
    /// A bank of `size` entries per table (the protocol's 65,536 at most).
    pub fn with_size(size: usize) -> Self {
        let size = size.min(65_536);
        Self {
            coils: vec![false; size],
            discrete_inputs: vec![false; size],
            holding: vec![0; size],
            input: vec![0; size],
        }
    }

    /// Writes a snapshot into the input registers per [`REGISTER_MAP`]; the
    /// discrete input 0 mirrors "running".
    pub fn write_snapshot(&mut self, s: &MachineSnapshot) {
        let put = |regs: &mut Vec<u16>, at: u16, words: &[u16]| {
            let at = usize::from(at);
            if let Some(slot) = regs.get_mut(at..at + words.len()) {
                slot.copy_from_slice(words);
            }
        };
        let u32_words = |v: u64| {
            let v = u32::try_from(v).unwrap_or(u32::MAX);
            [(v >> 16) as u16, v as u16]
        };
        let f32_words = |v: f64| {
            let b = (v as f32).to_bits();
            [(b >> 16) as u16, b as u16]
        };
        let f64_bits = s.energy_kwh.to_bits();
        let energy = [
            (f64_bits >> 48) as u16,
            (f64_bits >> 32) as u16,
            (f64_bits >> 16) as u16,
            f64_bits as u16,
        ];
        let mut reason = [0u16; REASON_REGISTERS as usize];
        let bytes: Vec<u8> = s
            .state_reason
            .bytes()
            .filter(u8::is_ascii)
            .take(usize::from(REASON_REGISTERS) * 2)
            .collect();
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = u16::from(pair[0]);
            let lo = pair.get(1).copied().map_or(0, u16::from);
            reason[i] = (hi << 8) | lo;
        }
        for (tag, at, _, _) in REGISTER_MAP {
            match tag {
                Tag::State => put(&mut self.input, at, &[state_code(s.state)]),
                Tag::GoodCount => put(&mut self.input, at, &u32_words(s.good_count)),
                Tag::RejectCount => put(&mut self.input, at, &u32_words(s.reject_count)),
                Tag::Speed => put(&mut self.input, at, &f32_words(s.speed)),
                Tag::Temperature => put(&mut self.input, at, &f32_words(s.temperature)),
                Tag::Energy => put(&mut self.input, at, &energy),
                Tag::StateReason => put(&mut self.input, at, &reason),
            }
        }
        if let Some(d) = self.discrete_inputs.first_mut() {
            *d = s.state == MachineState::Running;
        }
    }
}

/// What a PLC answers to "read device identification" (43/14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlcIdentity {
    pub vendor: String,
    pub product_code: String,
    pub revision: String,
}

/// A shared register bank.
pub type SharedBank = Arc<RwLock<RegisterBank>>;

const ILLEGAL_FUNCTION: u8 = 0x01;
const ILLEGAL_DATA_ADDRESS: u8 = 0x02;
const ILLEGAL_DATA_VALUE: u8 = 0x03;

/// Answers one request PDU from the bank: the response PDU (an exception
/// response for bad requests).
pub fn respond(bank: &SharedBank, identity: &PlcIdentity, pdu: &[u8]) -> Vec<u8> {
    let Some(&function) = pdu.first() else {
        return vec![0x80, ILLEGAL_FUNCTION];
    };
    let exception = |code: u8| vec![function | 0x80, code];
    let word =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*pdu.get(i)?, *pdu.get(i + 1)?])) };
    match function {
        0x01..=0x04 => {
            let (Some(start), Some(count)) = (word(1), word(3)) else {
                return exception(ILLEGAL_DATA_VALUE);
            };
            let bits = function <= 0x02;
            let max = if bits { 2000 } else { 125 };
            if count == 0 || count > max {
                return exception(ILLEGAL_DATA_VALUE);
            }
            let (start, end) = (usize::from(start), usize::from(start) + usize::from(count));
            let bank = bank.read().unwrap_or_else(|e| e.into_inner());
            if bits {
                let table = if function == 0x01 {
                    &bank.coils
                } else {
                    &bank.discrete_inputs
                };
                let Some(values) = table.get(start..end) else {
                    return exception(ILLEGAL_DATA_ADDRESS);
                };
                let mut bytes = vec![0u8; values.len().div_ceil(8)];
                for (i, v) in values.iter().enumerate() {
                    if *v {
                        bytes[i / 8] |= 1 << (i % 8);
                    }
                }
                let mut out = vec![function, bytes.len() as u8];
                out.extend(bytes);
                out
            } else {
                let table = if function == 0x03 {
                    &bank.holding
                } else {
                    &bank.input
                };
                let Some(values) = table.get(start..end) else {
                    return exception(ILLEGAL_DATA_ADDRESS);
                };
                let mut out = vec![function, (values.len() * 2) as u8];
                for v in values {
                    out.extend(v.to_be_bytes());
                }
                out
            }
        }
        0x05 | 0x06 => {
            let (Some(address), Some(value)) = (word(1), word(3)) else {
                return exception(ILLEGAL_DATA_VALUE);
            };
            let mut bank = bank.write().unwrap_or_else(|e| e.into_inner());
            let address = usize::from(address);
            if function == 0x05 {
                let on = match value {
                    0xFF00 => true,
                    0x0000 => false,
                    _ => return exception(ILLEGAL_DATA_VALUE),
                };
                let Some(slot) = bank.coils.get_mut(address) else {
                    return exception(ILLEGAL_DATA_ADDRESS);
                };
                *slot = on;
            } else {
                let Some(slot) = bank.holding.get_mut(address) else {
                    return exception(ILLEGAL_DATA_ADDRESS);
                };
                *slot = value;
            }
            pdu[..5].to_vec()
        }
        0x0F | 0x10 => {
            let (Some(start), Some(count), Some(&len)) = (word(1), word(3), pdu.get(5)) else {
                return exception(ILLEGAL_DATA_VALUE);
            };
            let data = pdu.get(6..6 + usize::from(len)).unwrap_or(&[]);
            let (start, n) = (usize::from(start), usize::from(count));
            let mut bank = bank.write().unwrap_or_else(|e| e.into_inner());
            if function == 0x0F {
                if n == 0 || n > 1968 || data.len() != n.div_ceil(8) {
                    return exception(ILLEGAL_DATA_VALUE);
                }
                let Some(slots) = bank.coils.get_mut(start..start + n) else {
                    return exception(ILLEGAL_DATA_ADDRESS);
                };
                for (i, slot) in slots.iter_mut().enumerate() {
                    *slot = data[i / 8] & (1 << (i % 8)) != 0;
                }
            } else {
                if n == 0 || n > 123 || data.len() != n * 2 {
                    return exception(ILLEGAL_DATA_VALUE);
                }
                let Some(slots) = bank.holding.get_mut(start..start + n) else {
                    return exception(ILLEGAL_DATA_ADDRESS);
                };
                for (slot, pair) in slots.iter_mut().zip(data.chunks(2)) {
                    *slot = u16::from_be_bytes([pair[0], pair[1]]);
                }
            }
            pdu[..5].to_vec()
        }
        0x2B => {
            // MEI type 14 (read device identification), basic objects 0..=2.
            if pdu.get(1) != Some(&0x0E) {
                return exception(ILLEGAL_FUNCTION);
            }
            let code = pdu.get(2).copied().unwrap_or(1);
            if !(1..=4).contains(&code) {
                return exception(ILLEGAL_DATA_VALUE);
            }
            let objects = [
                identity.vendor.as_bytes(),
                identity.product_code.as_bytes(),
                identity.revision.as_bytes(),
            ];
            let first = if code == 4 {
                usize::from(pdu.get(3).copied().unwrap_or(0))
            } else {
                0
            };
            if first >= objects.len() {
                return exception(ILLEGAL_DATA_ADDRESS);
            }
            let listed: Vec<(usize, &[u8])> = if code == 4 {
                vec![(first, objects[first])]
            } else {
                objects.iter().copied().enumerate().collect()
            };
            // function, MEI, read code, conformity (basic, stream+individual),
            // more follows, next object id, number of objects.
            let mut out = vec![0x2B, 0x0E, code, 0x81, 0x00, 0x00, listed.len() as u8];
            for (id, value) in listed {
                let value = &value[..value.len().min(240)];
                out.push(id as u8);
                out.push(value.len() as u8);
                out.extend_from_slice(value);
            }
            out
        }
        _ => exception(ILLEGAL_FUNCTION),
    }
}

/// Serves Modbus TCP on `listener` from `bank` until `shutdown`.
pub async fn serve_plc(
    listener: TcpListener,
    bank: SharedBank,
    identity: PlcIdentity,
    mut shutdown: watch::Receiver<bool>,
) {
    let identity = Arc::new(identity);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let bank = bank.clone();
                let identity = identity.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(serve_connection(stream, bank, identity, shutdown));
            }
            Err(e) => {
                tracing::warn!(error = %e, "simulated PLC: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    bank: SharedBank,
    identity: Arc<PlcIdentity>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut header = [0u8; 7];
    loop {
        let read = tokio::select! {
            r = stream.read_exact(&mut header) => r,
            _ = shutdown.changed() => return,
        };
        if read.is_err() {
            return;
        }
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        // Protocol id must be 0; the length covers the unit id and the PDU.
        if header[2..4] != [0, 0] || !(2..=254).contains(&length) {
            return;
        }
        let mut pdu = vec![0u8; length - 1];
        if stream.read_exact(&mut pdu).await.is_err() {
            return;
        }
        let response = respond(&bank, &identity, &pdu);
        let mut frame = Vec::with_capacity(7 + response.len());
        frame.extend_from_slice(&header[0..4]);
        frame.extend_from_slice(&((response.len() + 1) as u16).to_be_bytes());
        frame.push(header[6]);
        frame.extend_from_slice(&response);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// The demo plant as PLCs: ticks the plant model and keeps each machine's
/// register bank current.
pub struct PlcPlant {
    plant: PlantSim,
    banks: Vec<SharedBank>,
    tick: Duration,
}

impl PlcPlant {
    pub fn new(machines: &[SimulatedMachine], seed: u64, tick: Duration) -> Self {
        Self {
            plant: PlantSim::new(machines, seed),
            banks: machines
                .iter()
                .map(|_| Arc::new(RwLock::new(RegisterBank::default())))
                .collect(),
            tick,
        }
    }

    /// One bank per machine, in configuration order.
    pub fn banks(&self) -> &[SharedBank] {
        &self.banks
    }

    /// Steps the plant to `now_ms` and writes every machine's registers.
    pub fn update(&mut self, now_ms: u64) {
        for (snapshot, bank) in self.plant.step(now_ms).iter().zip(&self.banks) {
            bank.write()
                .unwrap_or_else(|e| e.into_inner())
                .write_snapshot(snapshot);
        }
    }

    /// Ticks until `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let clock = Clock::start();
        self.update(clock.now_ms());
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.update(clock.now_ms()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> SharedBank {
        Arc::new(RwLock::new(RegisterBank::default()))
    }

    fn identity() -> PlcIdentity {
        PlcIdentity {
            vendor: "Gantry".into(),
            product_code: "filler".into(),
            revision: "1.0".into(),
        }
    }

    #[test]
    fn snapshot_lands_where_the_map_says() {
        let b = bank();
        let snapshot = MachineSnapshot {
            timestamp_ms: 0,
            state: MachineState::Faulted,
            state_reason: "jam at infeed".into(),
            good_count: 70_000,
            reject_count: 3,
            speed: 612.5,
            temperature: 41.25,
            energy_kwh: 1234.567,
        };
        b.write().unwrap().write_snapshot(&snapshot);
        let r = b.read().unwrap().input.clone();
        assert_eq!(r[0], state_code(MachineState::Faulted));
        assert_eq!((u32::from(r[1]) << 16) | u32::from(r[2]), 70_000);
        assert_eq!((u32::from(r[3]) << 16) | u32::from(r[4]), 3);
        let f = f32::from_bits((u32::from(r[5]) << 16) | u32::from(r[6]));
        assert_eq!(f, 612.5);
        let e = f64::from_bits(
            (u64::from(r[9]) << 48)
                | (u64::from(r[10]) << 32)
                | (u64::from(r[11]) << 16)
                | u64::from(r[12]),
        );
        assert_eq!(e, 1234.567);
        let text: Vec<u8> = r[13..29].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert!(text.starts_with(b"jam at infeed\0"));
    }

    #[test]
    fn reads_writes_and_exceptions() {
        let b = bank();
        let id = identity();
        b.write().unwrap().holding[2] = 0xBEEF;
        assert_eq!(
            respond(&b, &id, &[0x03, 0, 2, 0, 1]),
            vec![0x03, 2, 0xBE, 0xEF]
        );
        // Past the end of the bank: illegal data address.
        assert_eq!(respond(&b, &id, &[0x04, 0, 127, 0, 2]), vec![0x84, 0x02]);
        assert_eq!(respond(&b, &id, &[0x03, 0, 0, 0, 200]), vec![0x83, 0x03]);
        assert_eq!(respond(&b, &id, &[0x07]), vec![0x87, 0x01]);
        assert_eq!(
            respond(&b, &id, &[0x05, 0, 9, 0xFF, 0]),
            vec![0x05, 0, 9, 0xFF, 0]
        );
        assert_eq!(respond(&b, &id, &[0x01, 0, 8, 0, 3]), vec![0x01, 1, 0b010]);
        assert_eq!(
            respond(&b, &id, &[0x10, 0, 4, 0, 2, 4, 0, 1, 0, 2]),
            vec![0x10, 0, 4, 0, 2]
        );
        assert_eq!(b.read().unwrap().holding[4..6], [1, 2]);
        assert_eq!(respond(&b, &id, &[]), vec![0x80, 0x01]);
    }

    #[test]
    fn device_identification_lists_the_basic_objects() {
        let out = respond(&bank(), &identity(), &[0x2B, 0x0E, 0x01, 0x00]);
        assert_eq!(&out[..7], &[0x2B, 0x0E, 0x01, 0x81, 0x00, 0x00, 3]);
        assert_eq!(&out[7..9], &[0, 6]);
        assert_eq!(&out[9..15], b"Gantry");
    }
}
