//! The coalescing planner: the fewest read requests that cover a device's
//! points.
//!
//! Per table, points are sorted by address and merged into one request while
//! the gap of unused addresses between them is at most `max_gap` and the
//! request stays within the protocol's limit (125 registers, 2000 bits).

use super::config::{PointConfig, Table};

/// One read request of a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    /// First protocol address read.
    pub address: u16,
    /// Registers (or bits) read.
    pub count: u16,
    /// The points this request feeds.
    pub points: Vec<PlannedPoint>,
}

/// A point within a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedPoint {
    /// Index into the device's points.
    pub index: usize,
    /// Offset of the point's first register (or bit) in the response.
    pub offset: u16,
}

/// Plans the reads for `points`, table by table (holding, input, coil,
/// discrete), in address order.
pub fn plan(points: &[PointConfig], max_gap: u16) -> Vec<ReadRequest> {
    let mut requests = Vec::new();
    for table in [Table::Holding, Table::Input, Table::Coil, Table::Discrete] {
        let mut ranges: Vec<(u32, u32, usize)> = points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.table == table)
            .map(|(index, p)| {
                let r = p.range();
                (r.start, r.end, index)
            })
            .collect();
        ranges.sort_unstable();
        let limit = u32::from(table.max_per_request());
        let gap = u32::from(max_gap);
        // (start, end, members) of the request being built.
        let mut current: Option<Draft> = None;
        for (start, end, index) in ranges {
            if let Some((first, last, members)) = current.as_mut() {
                let joins = start <= last.saturating_add(gap) && end.max(*last) - *first <= limit;
                if joins {
                    *last = end.max(*last);
                    members.push((index, start));
                    continue;
                }
            }
            if let Some(done) = current.take() {
                requests.push(finish(table, done));
            }
            current = Some((start, end, vec![(index, start)]));
        }
        if let Some(done) = current {
            requests.push(finish(table, done));
        }
    }
    requests
}

/// A request being built: first address, end (exclusive), and its points
/// as (index, address).
type Draft = (u32, u32, Vec<(usize, u32)>);

fn finish(table: Table, (start, end, members): Draft) -> ReadRequest {
    // Addresses and widths were validated to fit 0..=65535 and the limits.
    let narrow = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    ReadRequest {
        table,
        address: narrow(start),
        count: narrow(end - start),
        points: members
            .into_iter()
            .map(|(index, at)| PlannedPoint {
                index,
                offset: narrow(at - start),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::{PointType, Target};

    fn point(table: Table, address: u16, kind: PointType) -> PointConfig {
        PointConfig {
            tag: format!("t{address}"),
            topic: format!("a/b/t{address}"),
            table,
            address,
            kind,
            scale: 1.0,
            offset: 0.0,
            deadband: 0.0,
            enum_map: Vec::new(),
            target: Target::Float,
        }
    }

    fn spans(requests: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        requests
            .iter()
            .map(|r| (r.table, r.address, r.count))
            .collect()
    }

    #[test]
    fn contiguous_points_share_a_request() {
        let points = vec![
            point(Table::Holding, 4, PointType::Float32),
            point(Table::Holding, 0, PointType::Int16),
            point(Table::Holding, 1, PointType::Uint16),
            point(Table::Holding, 2, PointType::Int32),
        ];
        let requests = plan(&points, 0);
        assert_eq!(spans(&requests), [(Table::Holding, 0, 6)]);
        let offsets: Vec<(usize, u16)> = requests[0]
            .points
            .iter()
            .map(|p| (p.index, p.offset))
            .collect();
        assert_eq!(offsets, [(1, 0), (2, 1), (3, 2), (0, 4)]);
    }

    #[test]
    fn gaps_are_bridged_up_to_max_gap() {
        let points = vec![
            point(Table::Holding, 0, PointType::Int16),
            point(Table::Holding, 5, PointType::Int16), // gap of 4
            point(Table::Holding, 20, PointType::Int16), // gap of 14
        ];
        assert_eq!(
            spans(&plan(&points, 0)),
            [
                (Table::Holding, 0, 1),
                (Table::Holding, 5, 1),
                (Table::Holding, 20, 1)
            ]
        );
        assert_eq!(
            spans(&plan(&points, 4)),
            [(Table::Holding, 0, 6), (Table::Holding, 20, 1)]
        );
        assert_eq!(spans(&plan(&points, 14)), [(Table::Holding, 0, 21)]);
    }

    #[test]
    fn tables_never_mix() {
        let points = vec![
            point(Table::Input, 0, PointType::Int16),
            point(Table::Holding, 1, PointType::Int16),
            point(Table::Coil, 0, PointType::Bool),
            point(Table::Discrete, 1, PointType::Bool),
            point(Table::Coil, 1, PointType::Bool),
        ];
        assert_eq!(
            spans(&plan(&points, 10)),
            [
                (Table::Holding, 1, 1),
                (Table::Input, 0, 1),
                (Table::Coil, 0, 2),
                (Table::Discrete, 1, 1)
            ]
        );
    }

    #[test]
    fn register_requests_stop_at_125() {
        // 200 consecutive registers: 125 + 75.
        let points: Vec<_> = (0..200)
            .map(|a| point(Table::Holding, a, PointType::Uint16))
            .collect();
        assert_eq!(
            spans(&plan(&points, 0)),
            [(Table::Holding, 0, 125), (Table::Holding, 125, 75)]
        );
        // A float32 never straddles two requests: 62 floats fill 124.
        let floats: Vec<_> = (0..70)
            .map(|i| point(Table::Input, i * 2, PointType::Float32))
            .collect();
        assert_eq!(
            spans(&plan(&floats, 0)),
            [(Table::Input, 0, 124), (Table::Input, 124, 16)]
        );
    }

    #[test]
    fn bit_requests_stop_at_2000() {
        let points: Vec<_> = (0..4500)
            .map(|a| point(Table::Coil, a, PointType::Bool))
            .collect();
        assert_eq!(
            spans(&plan(&points, 0)),
            [
                (Table::Coil, 0, 2000),
                (Table::Coil, 2000, 2000),
                (Table::Coil, 4000, 500)
            ]
        );
    }

    #[test]
    fn bits_of_one_register_share_it() {
        let points = vec![
            point(Table::Holding, 10, PointType::Bit { bit: 0 }),
            point(Table::Holding, 10, PointType::Bit { bit: 7 }),
            point(Table::Holding, 11, PointType::Int16),
        ];
        let requests = plan(&points, 0);
        assert_eq!(spans(&requests), [(Table::Holding, 10, 2)]);
        assert_eq!(requests[0].points.len(), 3);
    }

    #[test]
    fn thousand_points_need_a_handful_of_requests() {
        // 1,000 points: 400 holding (float32, one unused register after
        // every tenth), 300 input uint16, 300 coils.
        let mut points = Vec::new();
        let mut address = 0u16;
        for i in 0..400 {
            points.push(point(Table::Holding, address, PointType::Float32));
            address += if i % 10 == 9 { 3 } else { 2 };
        }
        for a in 0..300 {
            points.push(point(Table::Input, a, PointType::Uint16));
        }
        for a in 0..300 {
            points.push(point(Table::Coil, a, PointType::Bool));
        }
        assert_eq!(points.len(), 1_000);
        let with_gap = plan(&points, 8);
        let without_gap = plan(&points, 0);
        // Holding spans 0..839: 7 requests of at most 125; input 3; coils 1.
        assert_eq!(with_gap.len(), 11, "{:?}", spans(&with_gap));
        // Without bridging every tenth float starts a new request.
        assert_eq!(without_gap.len(), 40 + 3 + 1);
        let covered: usize = with_gap.iter().map(|r| r.points.len()).sum();
        assert_eq!(covered, 1_000);
        for r in &with_gap {
            assert!(r.count <= r.table.max_per_request());
            for p in &r.points {
                let width = points[p.index].kind.width();
                assert!(p.offset + width <= r.count);
            }
        }
    }
}
