//! Encoders for tables, chains, rules, sets and elements into a [`Batch`].

use super::attr::{Writer, NLM_F_APPEND, NLM_F_CREATE};
use super::batch::*;
use super::expr::{put_exprs, put_value, put_verdict};
use crate::error::{Error, Result};
use crate::expr::Lowered;
use crate::model::{
    concat_type, Chain, DataType, Elem, ElemData, Family, Key, KeyType, Policy, Set, Value,
};

const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_INTERVAL: u32 = 0x4;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const SET_CONCAT: u32 = 0x80;
pub const DATA_VERDICT_TYPE: u32 = 0xffff_ff00;
const ELEM_INTERVAL_END: u32 = 0x1;

/// Element lists are nested attributes with a 16-bit length: keep each message well under.
const ELEMS_PER_MSG_BYTES: usize = 48 * 1024;

pub(crate) fn key_len(fields: &[KeyType]) -> usize {
    if fields.len() == 1 {
        fields[0].size()
    } else {
        fields.iter().map(|f| (f.size() + 3) & !3).sum()
    }
}

/// Key bytes as the kernel stores them: concatenated fields each padded to 4 bytes.
pub(crate) fn key_bytes(values: &[Value]) -> Vec<u8> {
    if values.len() == 1 {
        return values[0].bytes();
    }
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.bytes());
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

impl Batch {
    pub fn add_table(&mut self, family: Family, name: &str) {
        let m = self.begin_nft(MSG_NEWTABLE, NLM_F_CREATE, family.nfproto(), u32::MAX);
        self.w.put_str(1, name);
        self.w.put_be32(2, 0);
        self.w.end_msg(m);
    }

    pub fn del_table(&mut self, family: Family, name: &str) {
        let m = self.begin_nft(MSG_DELTABLE, 0, family.nfproto(), u32::MAX);
        self.w.put_str(1, name);
        self.w.end_msg(m);
    }

    /// Creates a chain, or updates a base chain's policy if it exists.
    pub fn add_chain(&mut self, family: Family, table: &str, chain: &Chain) {
        let m = self.begin_nft(MSG_NEWCHAIN, NLM_F_CREATE, family.nfproto(), u32::MAX);
        self.w.put_str(1, table);
        self.w.put_str(3, &chain.name);
        if let Some(b) = &chain.base {
            let h = self.w.nest(4);
            self.w.put_be32(1, b.hook.number());
            self.w.put_be32(2, b.priority as u32);
            self.w.end_nest(h);
            self.w
                .put_be32(5, if b.policy == Policy::Accept { 1 } else { 0 });
            self.w.put_str(7, b.kind.as_str());
        }
        self.w.end_msg(m);
    }

    pub fn del_chain(&mut self, family: Family, table: &str, name: &str) {
        let m = self.begin_nft(MSG_DELCHAIN, 0, family.nfproto(), u32::MAX);
        self.w.put_str(1, table);
        self.w.put_str(3, name);
        self.w.end_msg(m);
    }

    /// Deletes every rule of a chain (and the anonymous sets those rules own).
    pub fn flush_chain(&mut self, family: Family, table: &str, name: &str) {
        let m = self.begin_nft(MSG_DELRULE, 0, family.nfproto(), u32::MAX);
        self.w.put_str(1, table);
        self.w.put_str(2, name);
        self.w.end_msg(m);
    }

    /// Appends a lowered rule, creating its anonymous sets first in the same batch.
    pub fn add_rule(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        rule: &Lowered,
        pos: u32,
    ) -> Result<()> {
        let mut ids = Vec::with_capacity(rule.anon.len());
        for set in &rule.anon {
            let id = self.set_id();
            let name = self.anon_name(id);
            self.put_set(family, table, set, Some((id, &name)), pos)?;
            self.put_elements(
                MSG_NEWSETELEM,
                family,
                table,
                set,
                Some((id, &name)),
                set.elements.iter(),
                pos,
            )?;
            ids.push((id, name));
        }
        let m = self.begin_nft(
            MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            family.nfproto(),
            pos,
        );
        self.w.put_str(1, table);
        self.w.put_str(2, chain);
        put_exprs(&mut self.w, 4, &rule.exprs, &ids);
        self.w.end_msg(m);
        Ok(())
    }

    /// Creates a named set or map without its elements.
    pub fn add_set(&mut self, family: Family, table: &str, set: &Set) -> Result<()> {
        self.put_set(family, table, set, None, u32::MAX)
    }

    pub fn del_set(&mut self, family: Family, table: &str, name: &str) {
        let m = self.begin_nft(MSG_DELSET, 0, family.nfproto(), u32::MAX);
        self.w.put_str(1, table);
        self.w.put_str(2, name);
        self.w.end_msg(m);
    }

    fn put_set(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        anon: Option<(u32, &str)>,
        pos: u32,
    ) -> Result<()> {
        let anon_id = anon.map(|a| a.0);
        if set.key.is_empty() {
            return Err(Error::Invalid(format!("set {} has no key type", set.name)));
        }
        let mut flags = 0;
        if anon_id.is_some() {
            flags |= SET_ANONYMOUS | SET_CONSTANT;
        } else if set.flags.constant {
            flags |= SET_CONSTANT;
        }
        if set.flags.interval {
            flags |= SET_INTERVAL;
            if set.key.len() > 1 {
                flags |= SET_CONCAT;
            }
        }
        if set.is_map() {
            flags |= SET_MAP;
        }
        if set.timeout.is_some() && !set.flags.timeout {
            return Err(Error::Invalid(format!(
                "set {} has a default timeout but no timeout flag",
                set.name
            )));
        }
        if set.flags.timeout {
            flags |= SET_TIMEOUT;
        }
        if set.flags.dynamic {
            flags |= SET_EVAL;
        }
        let m = self.begin_nft(MSG_NEWSET, NLM_F_CREATE, family.nfproto(), pos);
        self.w.put_str(1, table);
        self.w.put_str(2, anon.map(|a| a.1).unwrap_or(&set.name));
        self.w.put_be32(3, flags);
        self.w.put_be32(4, concat_type(&set.key));
        self.w.put_be32(5, key_len(&set.key) as u32);
        match &set.data {
            Some(DataType::Verdict) => self.w.put_be32(6, DATA_VERDICT_TYPE),
            Some(DataType::Value(fields)) => {
                self.w.put_be32(6, concat_type(fields));
                self.w.put_be32(7, key_len(fields) as u32);
            }
            None => {}
        }
        // Field lengths only for interval concatenations (the pipapo backend); hash
        // sets refuse them, as nft knows.
        let concat_desc = set.key.len() > 1 && set.flags.interval;
        if concat_desc || anon_id.is_some() {
            let desc = self.w.nest(9);
            if anon_id.is_some() {
                self.w.put_be32(1, set.elements.len().max(1) as u32);
            }
            if concat_desc {
                let c = self.w.nest(2);
                for f in &set.key {
                    let el = self.w.nest(1);
                    self.w.put_be32(1, f.size() as u32);
                    self.w.end_nest(el);
                }
                self.w.end_nest(c);
            }
            self.w.end_nest(desc);
        }
        // The kernel requires a batch-local id on every new set, named or not.
        let id = match anon_id {
            Some(id) => id,
            None => self.set_id(),
        };
        self.w.put_be32(10, id);
        if let Some(t) = set.timeout {
            self.w.put_be64(11, t.as_millis() as u64);
        }
        if set.flags.counter {
            // NFTA_SET_EXPR: the template the kernel copies into every element it adds.
            let e = self.w.nest(17);
            self.w.put_str(1, "counter");
            let d = self.w.nest(2);
            self.w.put_be64(1, 0);
            self.w.put_be64(2, 0);
            self.w.end_nest(d);
            self.w.end_nest(e);
        }
        put_set_udata(&mut self.w, set);
        self.w.end_msg(m);
        Ok(())
    }

    /// Adds elements to a set that exists or is created earlier in this batch.
    pub fn add_elements<'a>(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        elems: impl Iterator<Item = (&'a Key, &'a Elem)>,
    ) -> Result<()> {
        self.put_elements(MSG_NEWSETELEM, family, table, set, None, elems, u32::MAX)
    }

    pub fn del_elements<'a>(
        &mut self,
        family: Family,
        table: &str,
        set: &Set,
        elems: impl Iterator<Item = (&'a Key, &'a Elem)>,
    ) -> Result<()> {
        self.put_elements(MSG_DELSETELEM, family, table, set, None, elems, u32::MAX)
    }

    /// Removes every element of a set (a delete with no element list).
    pub fn flush_set(&mut self, family: Family, table: &str, name: &str) {
        let m = self.begin_nft(MSG_DELSETELEM, 0, family.nfproto(), u32::MAX);
        self.w.put_str(1, table);
        self.w.put_str(2, name);
        self.w.end_msg(m);
    }

    #[allow(clippy::too_many_arguments)]
    fn put_elements<'a>(
        &mut self,
        msg: u16,
        family: Family,
        table: &str,
        set: &Set,
        anon: Option<(u32, &str)>,
        elems: impl Iterator<Item = (&'a Key, &'a Elem)>,
        pos: u32,
    ) -> Result<()> {
        let mut open: Option<(usize, usize, usize)> = None;
        for (key, elem) in elems {
            if open.is_some_and(|(_, list, _)| self.w.len() - list > ELEMS_PER_MSG_BYTES) {
                if let Some((m, list, _)) = open.take() {
                    self.w.end_nest(list);
                    self.w.end_msg(m);
                }
            }
            let (_, _, _) = *open.get_or_insert_with(|| {
                let flags = if msg == MSG_NEWSETELEM {
                    NLM_F_CREATE
                } else {
                    0
                };
                let m = self.begin_nft(msg, flags, family.nfproto(), pos);
                self.w.put_str(1, table);
                self.w.put_str(2, anon.map(|a| a.1).unwrap_or(&set.name));
                if let Some((id, _)) = anon {
                    self.w.put_be32(4, id);
                }
                let list = self.w.nest(3);
                (m, list, 0)
            });
            put_element(&mut self.w, set, key, elem)?;
        }
        if let Some((m, list, _)) = open {
            self.w.end_nest(list);
            self.w.end_msg(m);
        }
        Ok(())
    }
}

fn check_key(set: &Set, key: &Key) -> Result<()> {
    let types: Vec<KeyType> = key.0.iter().map(Value::key_type).collect();
    if types != set.key {
        return Err(Error::Invalid(format!(
            "element {:?} does not fit the key {:?} of set {}",
            key.0, set.key, set.name
        )));
    }
    Ok(())
}

fn put_element(w: &mut Writer, set: &Set, key: &Key, elem: &Elem) -> Result<()> {
    check_key(set, key)?;
    let kb = key_bytes(&key.0);
    let el = w.nest(1);
    put_value(w, 1, &kb);
    let single_interval = set.flags.interval && set.key.len() == 1;
    if let Some(end) = &elem.end {
        check_key(set, end)?;
        if !set.flags.interval {
            return Err(Error::Invalid(format!(
                "set {} has a range element but no interval flag",
                set.name
            )));
        }
        if !single_interval {
            put_value(w, 10, &key_bytes(&end.0));
        }
    }
    match &elem.data {
        Some(ElemData::Verdict(v)) => put_verdict(w, 2, v),
        Some(ElemData::Value(v)) => put_value(w, 2, &key_bytes(v)),
        None => {}
    }
    if let Some(t) = elem.timeout {
        w.put_be64(4, t.as_millis() as u64);
    }
    w.end_nest(el);
    if single_interval {
        // rbtree intervals close with a separate element one past the inclusive end,
        // omitted when the range reaches the top of the key space.
        let end = elem
            .end
            .as_ref()
            .map(|e| key_bytes(&e.0))
            .unwrap_or_else(|| kb.clone());
        if let Some(next) = increment(&end) {
            if set.key[0].host_order() {
                return Err(Error::Invalid(format!(
                    "set {}: intervals need a network-order key",
                    set.name
                )));
            }
            let el = w.nest(1);
            put_value(w, 1, &next);
            w.put_be32(3, ELEM_INTERVAL_END);
            w.end_nest(el);
        }
    }
    Ok(())
}

/// Big-endian increment; `None` on overflow.
pub(crate) fn increment(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = b.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(out);
        }
    }
    None
}

/// What nft keeps in a set's userdata to print it (byte orders, `typeof` expressions).
fn put_set_udata(w: &mut Writer, set: &Set) {
    let ud = super::udata::set_udata(set);
    if !ud.is_empty() {
        w.put(13, &ud);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_carries() {
        assert_eq!(increment(&[10, 0, 0, 255]), Some(vec![10, 0, 1, 0]));
        assert_eq!(increment(&[255, 255]), None);
    }

    #[test]
    fn concat_keys_pad_each_field() {
        let k = key_bytes(&[
            Value::Ipv4([10, 96, 0, 1].into()),
            Value::Proto(6),
            Value::Port(80),
        ]);
        assert_eq!(k, vec![10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(
            key_len(&[KeyType::Ipv4Addr, KeyType::InetProto, KeyType::InetService]),
            12
        );
    }
}
