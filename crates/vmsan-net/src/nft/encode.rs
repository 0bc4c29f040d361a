//! The ruleset as one nf_tables netlink batch: each command becomes its table, chain, set,
//! element and rule messages.

use super::encode_rule::encode_rule;
use super::encode_set::{elem_encode, set_def};
use super::ir::{Cmd, ElemOp, Ruleset};
use crate::nfnl::Batch;

impl Ruleset {
    /// The netlink batch of these commands.
    pub(super) fn batch(&self) -> Batch {
        let mut b = Batch::new();
        for c in &self.cmds {
            match c {
                Cmd::Table(f, t) => b.add_table(*f, t),
                Cmd::DeleteTable(f, t) => b.del_table(*f, t),
                Cmd::TableBlock {
                    family,
                    name,
                    sets,
                    chains,
                } => {
                    b.add_table(*family, name);
                    for s in sets {
                        let id = b.new_set_id();
                        b.add_set(*family, name, &set_def(s.kind, s.name, id));
                    }
                    // Every chain exists before any rule can jump to it.
                    for ch in chains {
                        b.add_chain(*family, name, ch.name, ch.base.map(|h| h.hook));
                    }
                    for ch in chains {
                        for r in &ch.rules {
                            let exprs = encode_rule(&mut b, *family, name, r);
                            b.add_rule(*family, name, ch.name, &exprs, r.comment, true);
                        }
                    }
                }
                Cmd::FlushChain(f, t, ch) => b.flush_chain(*f, t, ch),
                Cmd::FlushSet(f, t, s) => b.del_elems(*f, t, s, &[]),
                Cmd::Element {
                    op,
                    family,
                    table,
                    set,
                    elem,
                } => {
                    let e = [elem_encode(elem)];
                    match op {
                        ElemOp::Add => b.add_elems(*family, table, set, None, &e, false),
                        ElemOp::Create => b.add_elems(*family, table, set, None, &e, true),
                        ElemOp::Delete => b.del_elems(*family, table, set, &e),
                    }
                }
                Cmd::InsertRule {
                    family,
                    table,
                    chain,
                    rule,
                } => {
                    let exprs = encode_rule(&mut b, *family, table, rule);
                    b.add_rule(*family, table, chain, &exprs, rule.comment, false);
                }
                Cmd::DeleteRule {
                    family,
                    table,
                    chain,
                    handle,
                } => b.del_rule(*family, table, chain, *handle),
            }
        }
        b
    }
}
