"""The grammar the embedded backend constrains an answer with: a label field allows the schema's labels
alone; a list field allows JSON lists, escapes included; a field it cannot constrain is an error."""

import pytest


def test_the_embedded_grammar_accepts_json_lists_with_escapes():
    llama_cpp = pytest.importorskip("llama_cpp")
    from pld_optim.lm.chat import chat_grammar

    schema = {"properties": {"revised_rules": {"type": "array", "items": {"type": "string"}}}}
    prefix, grammar, suffix = chat_grammar(schema)
    assert prefix == "[[ ## revised_rules ## ]]\n" and suffix.endswith("[[ ## completed ## ]]")
    assert "\\\\" in grammar and "char" in grammar
    llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)  # raises on a malformed grammar


def test_an_embedded_answer_is_one_label_of_the_schema():
    from pld_optim.lm.chat import chat_grammar

    prefix, grammar, _ = chat_grammar({"properties": {"label": {"enum": ["gender", "race"]}}})
    assert prefix == "[[ ## label ## ]]\n" and 'f0 ::= "gender" | "race"' in grammar
    with pytest.raises(ValueError, match="no chat grammar for field 'x'"):
        chat_grammar({"properties": {"label": {"enum": ["a"]}, "x": {"type": "object"}}})


def test_a_rule_field_is_held_to_one_condition_and_the_given_label():
    from pld_optim.lm.chat import RULE_ANSWER, chat_grammar

    schema = {"properties": {"rationale": {"type": "string"}, "rule": {"type": "string", RULE_ANSWER: 'a "b"'}}}
    _, grammar, _ = chat_grammar(schema)
    assert 'f1 ::= "If " cond ", answer a \\"b\\"."' in grammar  # the label is a literal, quotes escaped
    condition = next(line for line in grammar.splitlines() if line.startswith("cond ::="))
    assert all(stop in condition for stop in ".;:!?\\n")  # a sentence end inside the condition cannot be written
    llama_cpp = pytest.importorskip("llama_cpp")
    llama_cpp.LlamaGrammar.from_string(grammar, verbose=False)
