//! The UNet's LoRA-capable layers for `lora-group`: every transformer's proj_in / proj_out (1×1
//! convolutions in SD 1.x checkpoints) and the attention projections of its blocks, listed with
//! their checkpoint paths.

use burn::prelude::*;
use lora_group::{LoraLinear, LoraModel};

use super::{Transformer2DModel, UNet2DConditionModel};

/// `(path prefix, attention blocks)` of every Transformer2DModel, in checkpoint order.
macro_rules! for_each_transformer {
    ($unet:expr, $iter:ident, $opt:ident, |$prefix:ident, $t:ident| $body:block) => {{
        for (i, block) in $unet.down_blocks.$iter().enumerate() {
            for (j, $t) in block.attentions.$iter().enumerate() {
                let $prefix = format!("down_blocks.{i}.attentions.{j}");
                $body
            }
        }
        if let Some(mid) = $unet.mid_block.$opt() {
            for (j, $t) in mid.attentions.$iter().enumerate() {
                let $prefix = format!("mid_block.attentions.{j}");
                $body
            }
        }
        for (i, block) in $unet.up_blocks.$iter().enumerate() {
            for (j, $t) in block.attentions.$iter().enumerate() {
                let $prefix = format!("up_blocks.{i}.attentions.{j}");
                $body
            }
        }
    }};
}

impl<B: Backend> Transformer2DModel<B> {
    fn visit_lora(&self, prefix: &str, f: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        f(&format!("{prefix}.proj_in"), &self.proj_in);
        f(&format!("{prefix}.proj_out"), &self.proj_out);
        for (k, tb) in self.transformer_blocks.iter().enumerate() {
            tb.attn1
                .visit_lora(&format!("{prefix}.transformer_blocks.{k}.attn1"), f);
            tb.attn2
                .visit_lora(&format!("{prefix}.transformer_blocks.{k}.attn2"), f);
        }
    }

    fn visit_lora_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        f(&format!("{prefix}.proj_in"), &mut self.proj_in);
        f(&format!("{prefix}.proj_out"), &mut self.proj_out);
        for (k, tb) in self.transformer_blocks.iter_mut().enumerate() {
            tb.attn1
                .visit_lora_mut(&format!("{prefix}.transformer_blocks.{k}.attn1"), f);
            tb.attn2
                .visit_lora_mut(&format!("{prefix}.transformer_blocks.{k}.attn2"), f);
        }
    }
}

impl<B: Backend> LoraModel<B> for UNet2DConditionModel<B> {
    fn visit_lora(&self, f: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        for_each_transformer!(self, iter, as_ref, |prefix, t| { t.visit_lora(&prefix, f) });
    }

    fn visit_lora_mut(&mut self, f: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        for_each_transformer!(self, iter_mut, as_mut, |prefix, t| {
            t.visit_lora_mut(&prefix, f)
        });
    }
}
