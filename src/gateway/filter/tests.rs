use super::*;

/// A token that may call everything but `delete_*` and `write_*`.
fn reader() -> impl Fn(&str) -> bool + 'static {
    |name: &str| !name.starts_with("delete_") && !name.starts_with("write_")
}

fn filter_for(request: &str) -> ToolsListFilter {
    ToolsListFilter::for_request(request.as_bytes(), reader()).expect("a tools/list request")
}

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#;

const ANSWER: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"read_file","inputSchema":{"type":"object"}}, {"name":"delete_repo","x":[1,{"y":"]}"}]},{"name":"write_file"}],"nextCursor":"c2","_meta":{"k":1}},"extra":true}"#;

const FILTERED: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"read_file","inputSchema":{"type":"object"}}],"nextCursor":"c2","_meta":{"k":1}},"extra":true}"#;

#[test]
fn only_tools_list_requests_with_an_id_are_candidates() {
    let none = |body: &str| ToolsListFilter::for_request(body.as_bytes(), reader()).is_none();
    assert!(none(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#
    ));
    assert!(none(r#"{"jsonrpc":"2.0","method":"tools/list"}"#));
    assert!(none(r#"{"jsonrpc":"2.0","id":null,"method":"tools/list"}"#));
    assert!(none("not json"));
    assert!(none(""));
    assert!(!none(REQUEST));
    // The last of duplicated members counts, as in the MCP server's parser.
    assert!(!none(r#"{"id":1,"method":"ping","method":"tools/list"}"#));
    let batch = filter_for(r#"[{"id":1,"method":"ping"},{"id":"b","method":"tools/list"}]"#);
    assert_eq!(batch.ids, vec![Value::from("b")]);
}

#[test]
fn a_json_answer_keeps_only_the_tools_the_token_may_call_and_every_other_byte() {
    let mut filter = filter_for(REQUEST);
    let out = filter.rewrite_json(ANSWER.as_bytes()).unwrap().unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), FILTERED);
    assert!(filter.all_answered());
}

#[test]
fn an_answer_that_drops_nothing_is_left_as_it_is() {
    let mut filter = ToolsListFilter::for_request(REQUEST.as_bytes(), |_: &str| true).unwrap();
    assert_eq!(filter.rewrite_json(ANSWER.as_bytes()).unwrap(), None);
}

#[test]
fn other_ids_and_error_answers_are_untouched() {
    let mut filter = filter_for(REQUEST);
    let other = ANSWER.replace(r#""id":7"#, r#""id":"7""#);
    assert_eq!(filter.rewrite_json(other.as_bytes()).unwrap(), None);
    assert!(!filter.all_answered());
    let error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
    assert_eq!(filter.rewrite_json(error.as_bytes()).unwrap(), None);
    assert!(filter.all_answered());
}

#[test]
fn a_batch_answer_is_filtered_element_by_element() {
    let mut filter = filter_for(r#"[{"id":1,"method":"ping"},{"id":7,"method":"tools/list"}]"#);
    let body = format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"delete_x"}}]}}}}, {ANSWER}]"#);
    let out = filter.rewrite_json(body.as_bytes()).unwrap().unwrap();
    let expected = format!(r#"[{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"delete_x"}}]}}}}, {FILTERED}]"#);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn answers_the_proxy_cannot_read_for_sure_are_unfilterable() {
    let unfilterable = |body: &str| filter_for(REQUEST).rewrite_json(body.as_bytes()).is_err();
    assert!(unfilterable("{not json"));
    assert!(unfilterable(
        r#"{"id":7,"result":{"tools":[]},"result":{"tools":[{"name":"delete_x"}]}}"#
    ));
    assert!(unfilterable(
        r#"{"id":7,"result":{"tools":[],"tools":[{"name":"delete_x"}]}}"#
    ));
    assert!(unfilterable(r#"{"id":7,"id":8,"result":{"tools":[]}}"#));
    assert!(unfilterable(r#"{"id":7,"result":{"tools":{"name":"delete_x"}}}"#));
    let huge = format!(
        r#"{{"id":7,"result":{{"tools":[{{"name":"{}"}}]}}}}"#,
        "a".repeat(MAX_TOOLS_LIST_ANSWER)
    );
    assert!(unfilterable(&huge));
}

#[test]
fn a_tool_without_one_string_name_is_dropped_and_escaped_keys_are_read() {
    let mut filter = filter_for(REQUEST);
    let body = r#"{"id":7,"result":{"tools":[{"na\u006de":"read_a"},{"name":1},{"x":1},{"name":"read_b","name":"delete_b"}]}}"#;
    let out = filter.rewrite_json(body.as_bytes()).unwrap().unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"id":7,"result":{"tools":[{"na\u006de":"read_a"}]}}"#
    );
}

/// Feeds `stream` to an SSE filter in chunks cut at `cuts`; what came out.
fn through_sse(request: &str, stream: &str, cuts: &[usize]) -> String {
    let mut sse = filter_for(request).sse();
    let mut out = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        out.extend(sse.push(&stream.as_bytes()[from..cut]).unwrap());
        from = cut;
    }
    out.extend(sse.finish().unwrap());
    String::from_utf8(out).unwrap()
}

#[test]
fn an_sse_answer_is_rewritten_wherever_the_chunks_are_cut() {
    for end in ["\n", "\r\n", "\r"] {
        let progress = format!(
            ": keep-alive{end}{end}event: message{end}data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}{end}{end}"
        );
        let answer = format!("id: 3{end}event: message{end}data: {ANSWER}{end}{end}");
        let expected_answer = format!("id: 3{end}event: message{end}data: {FILTERED}{end}{end}");
        let stream = format!("{progress}{answer}");
        let expected = format!("{progress}{expected_answer}");
        for cut in 0..=stream.len() {
            assert_eq!(
                through_sse(REQUEST, &stream, &[cut]),
                expected,
                "cut at {cut}, ends {end:?}"
            );
        }
        assert_eq!(
            through_sse(REQUEST, &stream, &(1..stream.len()).collect::<Vec<_>>()),
            expected,
            "one byte at a time, ends {end:?}"
        );
    }
}

#[test]
fn multi_line_data_is_joined_before_it_is_read() {
    let stream = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\ndata:\"result\":{\"tools\":[{\"name\":\"read_a\"},\ndata: {\"name\":\"write_a\"}]}}\n\n";
    let out = through_sse(REQUEST, stream, &[20, 60]);
    assert_eq!(
        out,
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\ndata: \"result\":{\"tools\":[{\"name\":\"read_a\"}]}}\n\n"
    );
}

#[test]
fn sse_events_for_other_ids_and_after_the_answer_pass_untouched() {
    let other = "data: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{\"tools\":[{\"name\":\"delete_a\"}]}}\n\n";
    let answer = "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"delete_a\"}]}}\n\n";
    let later =
        "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"delete_b\"}]}}\n\ndata: not json";
    let stream = format!("{other}data: not json\n\n{answer}{later}");
    let out = through_sse(REQUEST, &stream, &[5, 90]);
    let filtered_answer = "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[]}}\n\n";
    assert_eq!(out, format!("{other}data: not json\n\n{filtered_answer}{later}"));
}

#[test]
fn an_answer_event_cut_short_by_the_end_of_the_stream_is_filtered_too() {
    let stream = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"delete_a\"}]}}";
    assert_eq!(
        through_sse(REQUEST, stream, &[]),
        "data: {\"id\":7,\"result\":{\"tools\":[]}}"
    );
}

#[test]
fn an_sse_event_over_the_limit_is_unfilterable_and_answered_with_an_error() {
    let mut sse = filter_for(REQUEST).sse();
    let chunk = vec![b'a'; 1024 * 1024];
    assert!(sse.push(b"data: ").is_ok());
    let mut refused = None;
    for _ in 0..5 {
        if let Err(why) = sse.push(&chunk) {
            refused = Some(why);
            break;
        }
    }
    let why = refused.expect("refused past the limit");
    let event = String::from_utf8(sse.error_event(why)).unwrap();
    assert!(event.starts_with("event: message\ndata: {"), "{event}");
    let data: Value = serde_json::from_str(event.trim_end().strip_prefix("event: message\ndata: ").unwrap()).unwrap();
    assert_eq!(data["id"], 7);
    assert_eq!(data["error"]["code"], -32603);
}

#[test]
fn span_parsers_never_panic_on_broken_text() {
    for text in [
        "",
        "{",
        "[",
        "\"",
        "{\"a\"",
        "{\"a\":",
        "[1,",
        "{\"a\\",
        "}",
        "]]",
        "{\"id\":7,\"result\":{\"tools\":[{",
    ] {
        let b = text.as_bytes();
        let _ = members(b, 0..b.len());
        let _ = elements(b, 0..b.len());
        let _ = Cursor { b, at: 0 }.skip_value();
        let _ = filter_for(REQUEST).rewrite_valid(b);
    }
}

#[test]
fn a_get_stream_filters_every_answer_with_a_tools_list_whatever_its_id_to_its_end() {
    let mut stream = ToolsListFilter::for_stream(reader()).sse();
    let replayed = format!("id: 9\ndata: {ANSWER}\n\n");
    let other_id = replayed.replace(r#""id":7"#, r#""id":"later""#);
    let out = stream.push(replayed.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("id: 9\ndata: {FILTERED}\n\n"));
    assert!(!stream.passes_through(), "a stream is never done");
    let out = stream.push(other_id.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("id: 9\ndata: {}\n\n", FILTERED.replace(r#""id":7"#, r#""id":"later""#))
    );
    // Answers of other shapes, requests and notifications pass as they are.
    for event in [
        r#"data: {"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"x"}]}}"#,
        r#"data: {"jsonrpc":"2.0","id":4,"result":{"tools":"not a list"}}"#,
        r#"data: {"jsonrpc":"2.0","id":5,"result":[1]}"#,
        r#"data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
        r#"data: {"jsonrpc":"2.0","id":6,"method":"sampling/createMessage","params":{"tools":[{"name":"delete_x"}]}}"#,
    ] {
        let event = format!("{event}\n\n");
        let out = stream.push(event.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), event);
    }
    assert_eq!(stream.finish().unwrap(), Vec::<u8>::new());
}
