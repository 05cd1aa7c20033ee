//! Actions (`ofp_action_*`).
//!
//! ```text
//! +------------------+------------------+
//! |   type (16)      | len (16, incl.)  |   every action: a 4-byte header,
//! +------------------+------------------+   then a body; len is a multiple of 8
//! | body ...                            |
//! +-------------------------------------+
//! output:    port (32) | max_len (16) | pad (48)            len 16
//! set_queue: queue_id (32)                                  len 8
//! group:     group_id (32)                                  len 8
//! push_vlan: ethertype (16) | pad (16)                      len 8
//! pop_vlan:  pad (32)                                       len 8
//! set_field: OXM TLV | pad to 8                             len 8n
//! experimenter: experimenter (32) | data                    len 8n
//! ```

use super::error::DecodeError;
use super::frame::{pad8, Reader};
use super::oxm::OxmField;
use super::util::ser_hex;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

pub const OUTPUT: u16 = 0;
pub const PUSH_VLAN: u16 = 17;
pub const POP_VLAN: u16 = 18;
pub const SET_QUEUE: u16 = 21;
pub const GROUP: u16 = 22;
pub const SET_FIELD: u16 = 25;
pub const EXPERIMENTER: u16 = 0xffff;

/// `OFPCML_NO_BUFFER`: send the whole packet to the controller.
pub const CML_NO_BUFFER: u16 = 0xffff;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Output to a port (see [`crate::openflow::port`] for the special ports);
    /// `max_len` only matters for the controller port.
    Output {
        port: u32,
        max_len: u16,
    },
    SetQueue(u32),
    Group(u32),
    PushVlan(u16),
    PopVlan,
    SetField(OxmField),
    Experimenter {
        experimenter: u32,
        #[serde(serialize_with = "ser_hex")]
        data: Bytes,
    },
    /// Any other action: `data` is everything after the 4-byte header.
    Unknown {
        action_type: u16,
        #[serde(serialize_with = "ser_hex")]
        data: Bytes,
    },
}

impl Action {
    pub fn output(port: u32) -> Action {
        Action::Output { port, max_len: 0 }
    }
    /// Output to the controller with the given `max_len`.
    pub fn controller(max_len: u16) -> Action {
        Action::Output {
            port: super::port::CONTROLLER,
            max_len,
        }
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Action::Output { .. } => 16,
            Action::SetQueue(_) | Action::Group(_) | Action::PushVlan(_) | Action::PopVlan => 8,
            Action::SetField(f) => pad8(4 + f.buffer_len()),
            Action::Experimenter { data, .. } => 8 + data.len(),
            Action::Unknown { data, .. } => 4 + data.len(),
        }
    }

    pub fn emit(&self, dst: &mut BytesMut) {
        let len = self.buffer_len() as u16;
        match self {
            Action::Output { port, max_len } => {
                dst.put_u16(OUTPUT);
                dst.put_u16(len);
                dst.put_u32(*port);
                dst.put_u16(*max_len);
                dst.put_bytes(0, 6);
            }
            Action::SetQueue(q) => {
                dst.put_u16(SET_QUEUE);
                dst.put_u16(len);
                dst.put_u32(*q);
            }
            Action::Group(g) => {
                dst.put_u16(GROUP);
                dst.put_u16(len);
                dst.put_u32(*g);
            }
            Action::PushVlan(t) => {
                dst.put_u16(PUSH_VLAN);
                dst.put_u16(len);
                dst.put_u16(*t);
                dst.put_bytes(0, 2);
            }
            Action::PopVlan => {
                dst.put_u16(POP_VLAN);
                dst.put_u16(len);
                dst.put_bytes(0, 4);
            }
            Action::SetField(f) => {
                dst.put_u16(SET_FIELD);
                dst.put_u16(len);
                f.emit(dst);
                dst.put_bytes(0, usize::from(len) - 4 - f.buffer_len());
            }
            Action::Experimenter { experimenter, data } => {
                dst.put_u16(EXPERIMENTER);
                dst.put_u16(len);
                dst.put_u32(*experimenter);
                dst.put_slice(data);
            }
            Action::Unknown { action_type, data } => {
                dst.put_u16(*action_type);
                dst.put_u16(len);
                dst.put_slice(data);
            }
        }
    }

    pub(crate) fn parse(r: &mut Reader<'_>) -> Result<Action, DecodeError> {
        let typ = r.peek_u16(0)?;
        let len = usize::from(r.peek_u16(2)?);
        let mut a = r.element(len, 4, "action")?;
        a.skip(4)?;
        let act = match typ {
            OUTPUT => {
                a.what = "action output";
                let port = a.u32()?;
                let max_len = a.u16()?;
                a.skip(6)?;
                a.finish()?;
                Action::Output { port, max_len }
            }
            SET_QUEUE | GROUP => {
                a.what = if typ == SET_QUEUE {
                    "action set_queue"
                } else {
                    "action group"
                };
                let v = a.u32()?;
                a.finish()?;
                if typ == SET_QUEUE {
                    Action::SetQueue(v)
                } else {
                    Action::Group(v)
                }
            }
            PUSH_VLAN => {
                a.what = "action push_vlan";
                let t = a.u16()?;
                a.skip(2)?;
                a.finish()?;
                Action::PushVlan(t)
            }
            POP_VLAN => {
                a.what = "action pop_vlan";
                a.skip(4)?;
                a.finish()?;
                Action::PopVlan
            }
            SET_FIELD => {
                a.what = "action set_field";
                let f = OxmField::parse(&mut a)?;
                // The rest is padding.
                Action::SetField(f)
            }
            EXPERIMENTER => {
                a.what = "action experimenter";
                let experimenter = a.u32()?;
                Action::Experimenter {
                    experimenter,
                    data: Bytes::copy_from_slice(a.rest()),
                }
            }
            _ => Action::Unknown {
                action_type: typ,
                data: Bytes::copy_from_slice(a.rest()),
            },
        };
        Ok(act)
    }
}

impl super::util::ListElement for Action {
    fn parse_one(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Action::parse(r)
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
    fn action_bytes() {
        #[rustfmt::skip]
        let bytes: &[u8] = &[
            0x00, 0x00, 0x00, 0x10,   // OUTPUT, len 16
            0xff, 0xff, 0xff, 0xfd,   //   port CONTROLLER
            0xff, 0xff,               //   max_len NO_BUFFER
            0, 0, 0, 0, 0, 0,         //   pad
            0x00, 0x15, 0x00, 0x08,   // SET_QUEUE, len 8
            0x00, 0x00, 0x00, 0x03,   //   queue 3
            0x00, 0x11, 0x00, 0x08,   // PUSH_VLAN, len 8
            0x81, 0x00, 0, 0,         //   0x8100, pad
            0x00, 0x12, 0x00, 0x08,   // POP_VLAN, len 8
            0, 0, 0, 0,               //   pad
            0x00, 0x16, 0x00, 0x08,   // GROUP, len 8
            0x00, 0x00, 0x00, 0x07,   //   group 7
            0x00, 0x19, 0x00, 0x10,   // SET_FIELD, len 16
            0x80, 0x00, 0x0c, 0x02,   //   oxm vlan_vid (field 6), len 2
            0x10, 0x0a,               //   vid 10 | present
            0, 0, 0, 0, 0, 0,         //   pad
            0xff, 0xff, 0x00, 0x10,   // EXPERIMENTER, len 16
            0x00, 0x00, 0x23, 0x20,   //   Nicira
            1, 2, 3, 4, 5, 6, 7, 8,   //   data
            0x00, 0x0b, 0x00, 0x08,   // COPY_TTL_OUT (unknown to us), len 8
            0, 0, 0, 0,               //   pad
        ];
        let want = vec![
            Action::controller(CML_NO_BUFFER),
            Action::SetQueue(3),
            Action::PushVlan(0x8100),
            Action::PopVlan,
            Action::Group(7),
            Action::SetField(OxmField::VlanVid {
                vid: 0x100a,
                mask: None,
            }),
            Action::Experimenter {
                experimenter: 0x2320,
                data: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]),
            },
            Action::Unknown {
                action_type: 11,
                data: Bytes::from_static(&[0, 0, 0, 0]),
            },
        ];
        let got = parse_list::<Action>(&mut Reader::new(bytes, "t")).unwrap();
        assert_eq!(got, want);
        let mut out = BytesMut::new();
        emit_list(&want, &mut out);
        assert_eq!(&out[..], bytes);
        assert_eq!(list_len(&want), bytes.len());
    }

    #[test]
    fn action_length_errors() {
        let e = parse_list::<Action>(&mut Reader::new(&[0, 0, 0, 2, 0, 0, 0, 0], "t")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "action: length 2 is shorter than its 4-byte header"
        );
        let e =
            parse_list::<Action>(&mut Reader::new(&[0, 0, 0, 16, 0, 0, 0, 0], "t")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "action: length 16 runs past the 8 bytes that remain"
        );
        let e = parse_list::<Action>(&mut Reader::new(&[0, 0, 0, 8, 0, 0, 0, 0], "t")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "action output: needs 2 bytes but only 0 remain"
        );
    }
}
