//! Loading packet fields into registers, with the protocol checks each load depends on.

use super::*;

impl Lowerer {
    /// `meta KEY == BYTE`: the one-byte protocol checks a header load depends on.
    pub(super) fn meta_eq(&mut self, key: u32, byte: u8) {
        self.out.push(Expr::Meta { dreg: REG_1, key });
        self.out.push(Expr::Cmp {
            sreg: REG_1,
            op: 0,
            data: vec![byte],
        });
    }

    pub(super) fn dep_nfproto(&mut self, proto: u8) -> Result<()> {
        match self.family {
            Family::Inet => {
                if self.have_nfproto != Some(proto) {
                    self.meta_eq(META_NFPROTO, proto);
                    self.have_nfproto = Some(proto);
                }
                Ok(())
            }
            f if f.nfproto() == proto => Ok(()),
            f => Err(invalid(format!(
                "a {} table cannot match {} headers",
                f.as_str(),
                if proto == libc::NFPROTO_IPV4 as u8 {
                    "ip"
                } else {
                    "ip6"
                }
            ))),
        }
    }

    pub(super) fn dep_l4proto(&mut self, proto: u8) {
        if self.have_l4proto != Some(proto) {
            self.meta_eq(META_L4PROTO, proto);
            self.have_l4proto = Some(proto);
        }
    }

    /// Emits the protocol checks a selector needs before its load is meaningful.
    pub(super) fn deps(&mut self, sel: Selector) -> Result<()> {
        use Selector::*;
        match sel {
            IpSaddr | IpDaddr | IpProtocol => self.dep_nfproto(libc::NFPROTO_IPV4 as u8),
            Ip6Saddr | Ip6Daddr => self.dep_nfproto(libc::NFPROTO_IPV6 as u8),
            TcpSport | TcpDport => {
                self.dep_l4proto(libc::IPPROTO_TCP as u8);
                Ok(())
            }
            UdpSport | UdpDport => {
                self.dep_l4proto(libc::IPPROTO_UDP as u8);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    pub(super) fn load(&mut self, sel: Selector, dreg: u32) {
        use Selector::*;
        let net = |offset, len| Expr::Payload {
            dreg,
            base: PAYLOAD_NETWORK,
            offset,
            len,
        };
        let th = |offset| Expr::Payload {
            dreg,
            base: PAYLOAD_TRANSPORT,
            offset,
            len: 2,
        };
        let e = match sel {
            IpSaddr => net(12, 4),
            IpDaddr => net(16, 4),
            IpProtocol => net(9, 1),
            Ip6Saddr => net(8, 16),
            Ip6Daddr => net(24, 16),
            TcpSport | UdpSport | ThSport => th(0),
            TcpDport | UdpDport | ThDport => th(2),
            MetaL4proto => Expr::Meta {
                dreg,
                key: META_L4PROTO,
            },
            MetaMark => Expr::Meta {
                dreg,
                key: META_MARK,
            },
            MetaIifname => Expr::Meta {
                dreg,
                key: META_IIFNAME,
            },
            MetaOifname => Expr::Meta {
                dreg,
                key: META_OIFNAME,
            },
            CtMark => Expr::Ct {
                dreg,
                key: CT_MARK,
                dir: None,
            },
            CtOriginalIpDaddr => Expr::Ct {
                dreg,
                key: CT_DST_IP,
                dir: Some(CT_DIR_ORIGINAL),
            },
            CtOriginalProtoDst => Expr::Ct {
                dreg,
                key: CT_PROTO_DST,
                dir: Some(CT_DIR_ORIGINAL),
            },
            NumgenRandom(modulus) => Expr::Numgen { dreg, modulus },
        };
        self.out.push(e);
    }

    /// Loads a (possibly concatenated) key; returns the register holding it.
    pub(super) fn load_key(&mut self, key: &[Selector]) -> Result<u32> {
        if key.is_empty() {
            return Err(invalid("a set lookup needs at least one key field".into()));
        }
        for s in key {
            self.deps(*s)?;
        }
        if key.len() == 1 {
            self.load(key[0], REG_1);
            return Ok(REG_1);
        }
        if slots(key) > 16 {
            return Err(invalid("concatenated key longer than 64 bytes".into()));
        }
        self.load_from(key, 0);
        Ok(REG_1)
    }

    /// Loads `sel` field after field into consecutive 32-bit registers from `slot`.
    fn load_from(&mut self, sel: &[Selector], mut slot: u32) {
        for s in sel {
            self.load(*s, reg32(slot));
            slot += slots(std::slice::from_ref(s));
        }
    }

    /// Loads `data` into the registers after those `key` took (a map element's data for
    /// dynset), returning its first register; `None` when there is no data.
    pub(super) fn load_after(
        &mut self,
        key: &[Selector],
        data: &[Selector],
    ) -> Result<Option<u32>> {
        if data.is_empty() {
            return Ok(None);
        }
        let first = slots(key).max(1);
        if first + slots(data) > 16 {
            return Err(invalid("key and data longer than 64 bytes".into()));
        }
        for s in data {
            self.deps(*s)?;
        }
        self.load_from(data, first);
        Ok(Some(reg32(first)))
    }
}

impl Lowerer {
    /// Loads a key whose fields may be masked, field after field into consecutive
    /// registers; a mask applies to its field's register alone, after the load.
    pub(super) fn load_masked_key(&mut self, key: &[KeyField]) -> Result<u32> {
        let sels: Vec<Selector> = key.iter().map(|f| f.sel).collect();
        if slots(&sels) > 16 {
            return Err(invalid("concatenated key longer than 64 bytes".into()));
        }
        if key
            .iter()
            .any(|f| f.mask.is_some() && f.sel.key_type().size() != 4)
        {
            return Err(invalid(
                "only 4-byte key fields (marks) can be masked".into(),
            ));
        }
        let sreg = self.load_key(&sels)?;
        let mut slot = 0;
        for f in key {
            if let Some(mask) = f.mask {
                let reg = if key.len() == 1 { sreg } else { reg32(slot) };
                self.out.push(Expr::Bitwise {
                    sreg: reg,
                    dreg: reg,
                    mask: mask.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
            }
            slot += slots(std::slice::from_ref(&f.sel));
        }
        Ok(sreg)
    }
}

/// 32-bit register slots the fields take, each padded to 4 bytes.
fn slots(sel: &[Selector]) -> u32 {
    sel.iter()
        .map(|s| (pad4(s.key_type().size()) / 4) as u32)
        .sum()
}
