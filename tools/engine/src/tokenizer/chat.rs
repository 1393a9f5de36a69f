//! SmolLM2's chat template (ChatML with a default system turn), rendered directly instead of through a
//! Jinja engine: the template is fixed, and `Tokenizer::chat_template` exposes the file's own text so a
//! caller can check that it is this one.

use super::Tokenizer;

/// `tokenizer.chat_template` of SmolLM2-Instruct, which [`Tokenizer::apply_chat_template`] renders.
pub const SMOLLM2_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

const DEFAULT_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

impl Tokenizer {
    /// Renders `(role, content)` messages with SmolLM2's template, as transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` does: each message is
    /// `<|im_start|>{role}\n{content}<|im_end|>\n`, a default system turn comes first when the first
    /// message is not from `system`, and `<|im_start|>assistant\n` ends the prompt when asked. Encode
    /// the result with `parse_special = true`.
    pub fn apply_chat_template<R: AsRef<str>, C: AsRef<str>>(
        &self,
        messages: &[(R, C)],
        add_generation_prompt: bool,
    ) -> String {
        let mut out = String::new();
        let turn = |out: &mut String, role: &str, content: &str| {
            out.push_str("<|im_start|>");
            out.push_str(role);
            out.push('\n');
            out.push_str(content);
            out.push_str("<|im_end|>\n");
        };
        if let Some((role, _)) = messages.first()
            && role.as_ref() != "system"
        {
            turn(&mut out, "system", DEFAULT_SYSTEM);
        }
        for (role, content) in messages {
            turn(&mut out, role.as_ref(), content.as_ref());
        }
        if add_generation_prompt {
            out.push_str("<|im_start|>assistant\n");
        }
        out
    }
}
