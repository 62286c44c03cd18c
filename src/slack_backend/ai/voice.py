"""The prompt section that carries the requester's preferences and style examples, apart from the conversation."""

from __future__ import annotations

from slack_backend.ai.types import Voice

# Bounds, so a user's settings cannot crowd out the conversation.
MAX_STYLE_EXAMPLES = 5
MAX_EXAMPLE_CHARS = 500
_LENGTHS = {
    "brief": "one or two sentences",
    "medium": "a short paragraph",
    "detailed": "as much detail as the question deserves",
}


def voice_section(voice: Voice) -> str:
    """`<my_preferences>` (tone, length, language, instructions, signature) then `<my_style_examples>`."""
    lines: list[str] = []
    if voice.tone:
        lines.append(f"Tone: {voice.tone}.")
    if voice.length:
        lines.append(f"Length: {voice.length} ({_LENGTHS.get(voice.length, voice.length)}).")
    if voice.language:
        lines.append(f"Language: write the reply in {voice.language}.")
    if voice.custom_instructions:
        lines.append(f"Always: {voice.custom_instructions}")
    if voice.signature:
        lines.append(f"End the reply with this signature on its own line: {voice.signature}")
    parts: list[str] = []
    if lines:
        lines.insert(0, "How I want my drafts to sound (my <instructions>, when given, win over these):")
        parts.append("<my_preferences>\n" + "\n".join(lines) + "\n</my_preferences>")
    examples = [e.strip()[:MAX_EXAMPLE_CHARS] for e in voice.style_examples if e.strip()][:MAX_STYLE_EXAMPLES]
    if examples:
        body = "\n".join(f"<example>\n{example}\n</example>" for example in examples)
        note = "Messages I wrote: match their voice and phrasing, never copy their content."
        parts.append(f"<my_style_examples>\n{note}\n{body}\n</my_style_examples>")
    return "\n\n".join(parts)
