//! Instructions (`ofp_instruction_*`).
//!
//! ```text
//! +------------------+------------------+
//! |   type (16)      | len (16, incl.)  |
//! +------------------+------------------+
//! goto_table:      table_id (8) | pad (24)                        len 8
//! write_metadata:  pad (32) | metadata (64) | metadata_mask (64)  len 24
//! write/apply/clear_actions: pad (32) | actions ...               len 8+
//! meter:           meter_id (32)                                  len 8
//! ```

use super::action::{self, Action};
use super::error::DecodeError;
use super::frame::Reader;
use super::util::ser_hex;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

pub const GOTO_TABLE: u16 = 1;
pub const WRITE_METADATA: u16 = 2;
pub const WRITE_ACTIONS: u16 = 3;
pub const APPLY_ACTIONS: u16 = 4;
pub const CLEAR_ACTIONS: u16 = 5;
pub const METER: u16 = 6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Instruction {
    GotoTable(u8),
    WriteMetadata {
        metadata: u64,
        mask: u64,
    },
    WriteActions(Vec<Action>),
    ApplyActions(Vec<Action>),
    ClearActions,
    Meter(u32),
    /// Any other instruction (including experimenter): `data` is everything
    /// after the 4-byte header.
    Unknown {
        instruction_type: u16,
        #[serde(serialize_with = "ser_hex")]
        data: Bytes,
    },
}

impl Instruction {
    pub fn buffer_len(&self) -> usize {
        match self {
            Instruction::GotoTable(_) | Instruction::Meter(_) | Instruction::ClearActions => 8,
            Instruction::WriteMetadata { .. } => 24,
            Instruction::WriteActions(a) | Instruction::ApplyActions(a) => 8 + action::list_len(a),
            Instruction::Unknown { data, .. } => 4 + data.len(),
        }
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        let len = self.buffer_len() as u16;
        match self {
            Instruction::GotoTable(t) => {
                dst.put_u16(GOTO_TABLE);
                dst.put_u16(len);
                dst.put_u8(*t);
                dst.put_bytes(0, 3);
            }
            Instruction::WriteMetadata { metadata, mask } => {
                dst.put_u16(WRITE_METADATA);
                dst.put_u16(len);
                dst.put_bytes(0, 4);
                dst.put_u64(*metadata);
                dst.put_u64(*mask);
            }
            Instruction::WriteActions(a) | Instruction::ApplyActions(a) => {
                let t = if matches!(self, Instruction::WriteActions(_)) {
                    WRITE_ACTIONS
                } else {
                    APPLY_ACTIONS
                };
                dst.put_u16(t);
                dst.put_u16(len);
                dst.put_bytes(0, 4);
                action::emit_list(a, dst);
            }
            Instruction::ClearActions => {
                dst.put_u16(CLEAR_ACTIONS);
                dst.put_u16(len);
                dst.put_bytes(0, 4);
            }
            Instruction::Meter(m) => {
                dst.put_u16(METER);
                dst.put_u16(len);
                dst.put_u32(*m);
            }
            Instruction::Unknown {
                instruction_type,
                data,
            } => {
                dst.put_u16(*instruction_type);
                dst.put_u16(len);
                dst.put_slice(data);
            }
        }
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Instruction, DecodeError> {
        let typ = r.peek_u16(0)?;
        let len = usize::from(r.peek_u16(2)?);
        let mut i = r.element(len, 4, "instruction")?;
        i.skip(4)?;
        let ins = match typ {
            GOTO_TABLE => {
                i.what = "instruction goto_table";
                let t = i.u8()?;
                i.skip(3)?;
                i.finish()?;
                Instruction::GotoTable(t)
            }
            WRITE_METADATA => {
                i.what = "instruction write_metadata";
                i.skip(4)?;
                let metadata = i.u64()?;
                let mask = i.u64()?;
                i.finish()?;
                Instruction::WriteMetadata { metadata, mask }
            }
            WRITE_ACTIONS | APPLY_ACTIONS | CLEAR_ACTIONS => {
                i.what = match typ {
                    WRITE_ACTIONS => "instruction write_actions",
                    APPLY_ACTIONS => "instruction apply_actions",
                    _ => "instruction clear_actions",
                };
                i.skip(4)?;
                if typ == CLEAR_ACTIONS {
                    i.finish()?;
                    Instruction::ClearActions
                } else {
                    let a = action::parse_list(&mut i)?;
                    if typ == WRITE_ACTIONS {
                        Instruction::WriteActions(a)
                    } else {
                        Instruction::ApplyActions(a)
                    }
                }
            }
            METER => {
                i.what = "instruction meter";
                let m = i.u32()?;
                i.finish()?;
                Instruction::Meter(m)
            }
            _ => Instruction::Unknown {
                instruction_type: typ,
                data: Bytes::copy_from_slice(i.rest()),
            },
        };
        Ok(ins)
    }
}

impl super::util::ListElement for Instruction {
    fn parse_one(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Instruction::parse(r)
    }
    fn emit_one(&self, dst: &mut BytesMut) {
        self.emit(dst)
    }
    fn len_one(&self) -> usize {
        self.buffer_len()
    }
}

pub(crate) use super::util::{emit_list, list_len, parse_list};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_bytes() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x06, 0x00, 0x08,   // METER, len 8
            0x00, 0x00, 0x00, 0x01,   //   meter 1
            0x00, 0x04, 0x00, 0x18,   // APPLY_ACTIONS, len 24
            0, 0, 0, 0,               //   pad
            0x00, 0x00, 0x00, 0x10,   //   OUTPUT, len 16
            0x00, 0x00, 0x00, 0x02,   //     port 2
            0x00, 0x00,               //     max_len 0
            0, 0, 0, 0, 0, 0,         //     pad
            0x00, 0x05, 0x00, 0x08,   // CLEAR_ACTIONS, len 8
            0, 0, 0, 0,               //   pad
            0x00, 0x02, 0x00, 0x18,   // WRITE_METADATA, len 24
            0, 0, 0, 0,               //   pad
            0, 0, 0, 0, 0, 0, 0, 0x2a,          // metadata 42
            0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // mask
            0x00, 0x01, 0x00, 0x08,   // GOTO_TABLE, len 8
            0x05, 0, 0, 0,            //   table 5, pad
            0xff, 0xff, 0x00, 0x08,   // EXPERIMENTER (kept raw), len 8
            0x00, 0x00, 0x23, 0x20,   //   experimenter id
        ];
        let want = vec![
            Instruction::Meter(1),
            Instruction::ApplyActions(vec![Action::output(2)]),
            Instruction::ClearActions,
            Instruction::WriteMetadata {
                metadata: 42,
                mask: 0xffff_ffff,
            },
            Instruction::GotoTable(5),
            Instruction::Unknown {
                instruction_type: 0xffff,
                data: Bytes::from_static(&[0, 0, 0x23, 0x20]),
            },
        ];
        let got = parse_list::<Instruction>(&mut Reader::new(bytes, "t")).unwrap();
        assert_eq!(got, want);
        let mut out = BytesMut::new();
        emit_list(&want, &mut out);
        assert_eq!(&out[..], bytes);
        assert_eq!(list_len(&want), bytes.len());
    }
}
