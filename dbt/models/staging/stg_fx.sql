SELECT pair, ts, rate FROM {{ source('raw', 'fx') }}
