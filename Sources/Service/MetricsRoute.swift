extension ServiceResponder {
    /// `GET /metrics`: the Prometheus text format; an admin token unless `--metrics-public`.
    func metrics(_ r: RouteRequest) async throws -> Reply {
        if !server.config.metricsPublic { try requireAdmin(try authenticate(r.request)) }
        try r.query.allow([])
        return .text(try await server.metricsText(), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
