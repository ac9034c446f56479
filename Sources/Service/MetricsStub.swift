/// `GET /metrics` on the `openapi` branch: the route, its token rule and its content type, with an
/// empty exposition. The `metrics` branch (swift-prometheus) supplies the body: when the two
/// merge, this file goes, the route table's entry stays and calls that branch's handler.
extension ServiceResponder {
    func metrics(_ r: RouteRequest) async throws -> Reply {
        try requireAdmin(try authenticate(r.request))
        try r.query.allow([])
        return .text("", contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
